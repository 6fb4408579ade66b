"""Listener specifications as Kafka writes them."""

from __future__ import annotations

import pytest

from onceflow.broker.security.listeners import (
    ListenerError,
    SecurityProtocol,
    build_listeners,
    parse_protocol_map,
)


def test_names_are_protocols_unless_mapped() -> None:
    listeners = build_listeners(
        ["PLAINTEXT://127.0.0.1:9092", "internal://[::1]:9093", "SASL_SSL://0.0.0.0:0"],
        advertised=["SASL_SSL://broker.example:19094"],
        protocol_map=parse_protocol_map("INTERNAL:sasl_plaintext"),
    )
    assert [(lst.name, lst.protocol, lst.host, lst.port) for lst in listeners] == [
        ("PLAINTEXT", SecurityProtocol.PLAINTEXT, "127.0.0.1", 9092),
        ("INTERNAL", SecurityProtocol.SASL_PLAINTEXT, "::1", 9093),
        ("SASL_SSL", SecurityProtocol.SASL_SSL, "0.0.0.0", 0),
    ]
    assert listeners[0].client_host() == "127.0.0.1"
    assert (listeners[2].client_host(), listeners[2].advertised_port) == (
        "broker.example", 19094
    )  # fmt: skip
    assert str(listeners[1]) == "INTERNAL://[::1]:9093"
    assert not listeners[2].is_loopback and listeners[1].is_loopback


@pytest.mark.parametrize(
    ("specs", "advertised", "mapping", "message"),
    [
        (["PLAINTEXT:/h:1"], [], "", "NAME://HOST:PORT"),
        (["PLAINTEXT://h:70000"], [], "", "0-65535"),
        (["OTHER://h:1"], [], "", "unknown security protocol"),
        (["PLAINTEXT://h:1", "PLAINTEXT://h:2"], [], "", "given twice"),
        (["PLAINTEXT://h:1"], ["SSL://h:2"], "", "not a listener"),
        (["X://h:1"], [], "X:TLS", "unknown security protocol"),
        (["X://h:1"], [], "X", "NAME:PROTOCOL"),
    ],
)
def test_bad_specifications_say_why(
    specs: list[str], advertised: list[str], mapping: str, message: str
) -> None:
    with pytest.raises(ListenerError, match=message):
        build_listeners(specs, advertised, parse_protocol_map(mapping))
