"""Listeners: where the broker accepts connections, and with which security protocol.

Written as Kafka writes them, ``NAME://HOST:PORT``. As in Kafka, a listener named after
a security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) uses that protocol; any
other name needs an entry in the listener-name -> protocol map.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable, Mapping

#: Bind addresses meaning "every interface", which no client can connect to, and the
#: loopback address advertised instead (asyncio makes a "::" listener IPv6-only).
WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}

_LISTENER = re.compile(r"^(?P<name>[A-Za-z0-9_]+)://(?P<host>\[[^\]]*\]|[^:/\[\]]*):(?P<port>\d+)$")


class ListenerError(ValueError):
    """A listener specification that cannot be used; the message says why."""


class SecurityProtocol(enum.StrEnum):
    """Kafka's security protocols: encryption (SSL) and authentication (SASL) or not."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"

    @property
    def uses_tls(self) -> bool:
        return self in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)

    @property
    def uses_sasl(self) -> bool:
        return self in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL)


@dataclasses.dataclass(frozen=True, slots=True)
class Listener:
    """One listening socket: its name, protocol, bind address and advertised address."""

    name: str
    protocol: SecurityProtocol
    host: str
    #: 0 picks a free port; the bound port is then advertised.
    port: int
    #: What Metadata and FindCoordinator tell clients of this listener; None: the bind
    #: host (loopback for a wildcard) and the bound port.
    advertised_host: str | None = None
    advertised_port: int | None = None

    def client_host(self) -> str:
        """The host clients of this listener are told to connect to."""
        if self.advertised_host:
            return self.advertised_host
        return WILDCARD_HOSTS.get(self.host, self.host)

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.name}://{host}:{self.port}"


def parse_endpoint(spec: str) -> tuple[str, str, int]:
    """(name, host, port) of ``NAME://HOST:PORT`` (an IPv6 host in brackets)."""
    match = _LISTENER.match(spec.strip())
    if match is None:
        raise ListenerError(f"listener must look like NAME://HOST:PORT, got {spec!r}")
    port = int(match["port"])
    if port > 65535:
        raise ListenerError(f"port must be 0-65535 in {spec!r}")
    return match["name"].upper(), match["host"].strip("[]"), port


def parse_protocol_map(spec: str) -> dict[str, SecurityProtocol]:
    """``NAME:PROTOCOL,NAME:PROTOCOL`` (Kafka's listener.security.protocol.map)."""
    mapping = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, protocol = item.partition(":")
        if not sep:
            raise ListenerError(f"protocol map entries must be NAME:PROTOCOL, got {item!r}")
        mapping[name.upper()] = _protocol(protocol, f"for listener {name}")
    return mapping


def _protocol(value: str, where: str) -> SecurityProtocol:
    try:
        return SecurityProtocol(value.upper())
    except ValueError:
        known = ", ".join(p.value for p in SecurityProtocol)
        raise ListenerError(f"unknown security protocol {value!r} {where} ({known})") from None


def build_listeners(
    specs: Iterable[str],
    advertised: Iterable[str] = (),
    protocol_map: Mapping[str, SecurityProtocol] | None = None,
) -> tuple[Listener, ...]:
    """Listeners from ``NAME://HOST:PORT`` specs, with advertised addresses by name."""
    mapping = dict(protocol_map or {})
    listeners: list[Listener] = []
    for spec in specs:
        name, host, port = parse_endpoint(spec)
        if any(existing.name == name for existing in listeners):
            raise ListenerError(f"listener {name} is given twice")
        protocol = mapping.get(name) or _protocol(name, f"(listener {name} is not in the map)")
        listeners.append(Listener(name, protocol, host, port))
    by_name = {listener.name: listener for listener in listeners}
    for spec in advertised:
        name, host, port = parse_endpoint(spec)
        if name not in by_name:
            raise ListenerError(f"advertised listener {name} is not a listener")
        by_name[name] = dataclasses.replace(
            by_name[name], advertised_host=host, advertised_port=port or None
        )
    return tuple(by_name[listener.name] for listener in listeners)
