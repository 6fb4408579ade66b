"""Unmodified clients over every listener type: SASL PLAIN and SCRAM with and without
TLS, TLS alone, wrong passwords, untrusted certificates and stalled handshakes."""

from __future__ import annotations

import datetime
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from interop_support import consume_confluent
from security_support import PASSWORD, SecureBroker, start_secure_broker

from onceflow.admin.wire import encode_request, request_module

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
AUTHENTICATION_TIMEOUT_MS = 1500


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    broker = start_secure_broker(
        tmp_path_factory.mktemp("secure-broker"),
        authentication_timeout_ms=AUTHENTICATION_TIMEOUT_MS,
    )
    yield broker
    broker.thread.stop()


def _values(messages: list[Any]) -> list[bytes]:
    return [m.value() for m in messages]


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_transaction_and_group_consume_over_sasl(
    secure: SecureBroker, topic: str, protocol: str, mechanism: str
) -> None:
    config = secure.client_config(protocol, mechanism)
    producer = Producer({**config, "transactional.id": f"tx-{topic}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, f"committed-{i}".encode())
    producer.commit_transaction(30)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, f"aborted-{i}".encode())
    producer.flush(30)
    producer.abort_transaction(30)

    consumer = Consumer(
        {**config, "group.id": f"group-{topic}", "auto.offset.reset": "earliest",
         "isolation.level": "read_committed", "enable.auto.commit": False}
    )  # fmt: skip
    try:
        consumer.subscribe([topic])
        messages = consume_confluent(consumer, 5)
        assert _values(messages) == [f"committed-{i}".encode() for i in range(5)]
        consumer.commit(asynchronous=False)
        (committed,) = consumer.committed([TopicPartition(topic, 0)], timeout=30)
        assert committed.offset == messages[-1].offset() + 1
    finally:
        consumer.close()


def test_tls_without_sasl_round_trip(secure: SecureBroker, topic: str) -> None:
    config = secure.client_config("SSL")
    producer = Producer(config)
    for i in range(3):
        producer.produce(topic, f"tls-{i}".encode())
    assert producer.flush(30) == 0
    consumer = Consumer({**config, "group.id": f"g-{topic}", "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([topic])
        assert _values(consume_confluent(consumer, 3)) == [f"tls-{i}".encode() for i in range(3)]
    finally:
        consumer.close()


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_metadata_advertises_the_listener_connected_on(secure: SecureBroker, protocol: str) -> None:
    admin = AdminClient(secure.client_config(protocol))
    brokers = admin.list_topics(timeout=30).brokers
    assert [(b.host, b.port) for b in brokers.values()] == [secure.address(protocol)]


def _first_error(config: dict[str, Any], timeout: float = 30.0) -> KafkaError:
    errors: list[KafkaError] = []
    producer = Producer({**config, "error_cb": errors.append})
    deadline = time.monotonic() + timeout
    while not errors and time.monotonic() < deadline:
        producer.poll(0.2)
    assert errors, "the client reported no error"
    return errors[0]


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_wrong_password_fails_authentication(
    secure: SecureBroker, protocol: str, mechanism: str
) -> None:
    error = _first_error(secure.client_config(protocol, mechanism, password="wrong"))
    assert error.code() == KafkaError._AUTHENTICATION
    assert "Authentication failed" in error.str()


def test_unknown_user_fails_like_a_wrong_password(secure: SecureBroker) -> None:
    error = _first_error(secure.client_config("SASL_PLAINTEXT", user="mallory"))
    assert error.code() == KafkaError._AUTHENTICATION


def test_untrusted_server_certificate_is_refused_by_clients(secure: SecureBroker) -> None:
    error = _first_error(secure.client_config("SASL_SSL", trust=False))
    assert error.code() in (KafkaError._SSL, KafkaError._TRANSPORT)
    with pytest.raises(ssl.SSLCertVerificationError):  # noqa: SIM117 - the context fails
        with socket.create_connection(secure.address("SSL"), timeout=10) as raw:
            ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL", "SSL"])
def test_a_stalled_handshake_is_closed_while_others_are_served(
    secure: SecureBroker, protocol: str, topic: str
) -> None:
    # TCP connected, then silence: no TLS ClientHello, or no SaslHandshake.
    with socket.create_connection(secure.address(protocol), timeout=10) as stalled:
        producer = Producer(secure.client_config(protocol))
        producer.produce(topic, b"served")
        assert producer.flush(30) == 0
        assert _closed_within(stalled, 30), "the stalled connection was never closed"


def test_connection_is_closed_at_the_authentication_deadline(secure: SecureBroker) -> None:
    with socket.create_connection(secure.address("SASL_PLAINTEXT"), timeout=10) as stalled:
        opened = time.monotonic()
        assert _closed_within(stalled, 30)
        waited = time.monotonic() - opened
    assert waited >= AUTHENTICATION_TIMEOUT_MS / 1000 * 0.9


def test_client_certificate_subject_is_the_principal(
    secure: SecureBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = secure.client_certificate(tmp_path, "service-a")
    caplog.set_level("DEBUG", logger="onceflow.broker.security")
    config = {**secure.client_config("SSL"), "ssl.certificate.location": str(cert),
              "ssl.key.location": str(key)}  # fmt: skip
    AdminClient(config).list_topics(timeout=30)
    assert any("User:CN=service-a,O=onceflow" in r.getMessage() for r in caplog.records)


def _answer_over_tls(secure: SecureBroker, cert: Path, key: Path) -> bytes:
    """What the SSL listener answers to an ApiVersions request from this client
    certificate: the response frame, or b"" when the connection is refused."""
    context = secure.ssl_context()
    context.load_cert_chain(cert, key)
    request = encode_request(request_module(18, 0).ApiVersionsRequest(), 1)
    with socket.create_connection(secure.address("SSL"), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(request)
                return tls.recv(4)
        except (ssl.SSLError, ConnectionResetError):
            return b""


def test_expired_client_certificate_is_refused(secure: SecureBroker, tmp_path: Path) -> None:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    expired = secure.client_certificate(
        tmp_path, "expired", not_before=past, not_after=past + datetime.timedelta(days=1)
    )
    valid = secure.client_certificate(tmp_path, "valid")
    assert len(_answer_over_tls(secure, *valid)) == 4
    assert _answer_over_tls(secure, *expired) == b""


def test_password_is_never_logged(secure: SecureBroker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="onceflow")
    _first_error(secure.client_config("SASL_PLAINTEXT", "PLAIN", password="hunter2-secret"))
    AdminClient(secure.client_config("SASL_PLAINTEXT", "PLAIN")).list_topics(timeout=30)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "authentication failed" in logged
    assert "hunter2" not in logged and PASSWORD not in logged
