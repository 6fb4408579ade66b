"""SASL on the wire: what may be sent before authentication, how failures are answered
and slowed down, the SCRAM admin APIs, and the safe defaults."""

from __future__ import annotations

import datetime
import logging
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)
from kio.schema.errors import ErrorCode
from security_support import (
    PASSWORD,
    USER,
    SecureBroker,
    authenticate,
    handshake,
    plain,
    start_secure_broker,
)
from wire import WireClient

from onceflow.admin.wire import ConnectionClosed
from onceflow.broker.config import BrokerConfig
from onceflow.broker.server import BrokerThread


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    broker = start_secure_broker(
        tmp_path_factory.mktemp("sasl-wire"),
        listeners=("PLAINTEXT://127.0.0.1:0", "SASL_PLAINTEXT://127.0.0.1:0"),
    )
    yield broker
    broker.thread.stop()


def _client(secure: SecureBroker, protocol: str = "SASL_PLAINTEXT") -> WireClient:
    return WireClient(*secure.address(protocol))


def test_requests_before_authentication_close_the_connection(secure: SecureBroker) -> None:
    with _client(secure) as client:
        assert client.api_versions().error_code == ErrorCode.none
        with pytest.raises(ConnectionClosed):
            client.metadata([])


def test_large_frames_before_authentication_close_the_connection(
    secure: SecureBroker,
) -> None:
    with _client(secure) as client:
        # 1 MiB announced: fine after login (socket.request.max.bytes), not before.
        client.send_bytes(struct.pack(">i", 2**20) + bytes(1024))
        assert client.closed_by_peer(timeout=5)


def test_plain_login_then_requests_are_served(secure: SecureBroker) -> None:
    with _client(secure) as client:
        shake = handshake(client, "PLAIN")
        assert shake.error_code == ErrorCode.none
        assert set(shake.mechanisms) == {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
        answer = authenticate(client, plain(USER, PASSWORD))
        assert answer.error_code == ErrorCode.none
        # No re-authentication is offered (connections.max.reauth.ms is not supported).
        assert answer.session_lifetime == datetime.timedelta(0)
        assert client.metadata([]).brokers[0].port == secure.address("SASL_PLAINTEXT")[1]
        # A second handshake (re-authentication) is refused.
        assert handshake(client, "PLAIN").error_code == ErrorCode.illegal_sasl_state


def test_wrong_password_is_answered_then_the_connection_closed(secure: SecureBroker) -> None:
    with _client(secure) as client:
        assert handshake(client, "PLAIN").error_code == ErrorCode.none
        answer = authenticate(client, plain(USER, "not-the-password"))
        assert answer.error_code == ErrorCode.sasl_authentication_failed
        assert "not-the-password" not in (answer.error_message or "")
        assert client.closed_by_peer()


def test_unsupported_mechanism_and_missinghandshake(secure: SecureBroker) -> None:
    with _client(secure) as client:
        shake = handshake(client, "GSSAPI")
        assert shake.error_code == ErrorCode.unsupported_sasl_mechanism
        assert client.closed_by_peer()
    with _client(secure) as client:
        answer = authenticate(client, plain(USER, PASSWORD))
        assert answer.error_code == ErrorCode.illegal_sasl_state
        assert client.closed_by_peer()
    with _client(secure) as client:
        # v0 would be followed by raw SASL tokens, which the broker does not speak.
        assert handshake(client, "PLAIN", version=0).error_code == ErrorCode.unsupported_version
        assert client.closed_by_peer()


def test_unreadable_credential_file_fails_logins_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secure = start_secure_broker(tmp_path, listeners=("SASL_PLAINTEXT://127.0.0.1:0",))
    try:
        (tmp_path / "data" / "users.json").write_text("{not json")
        with _client(secure) as client:
            handshake(client, "PLAIN")
            answer = authenticate(client, plain(USER, PASSWORD))
            assert answer.error_code == ErrorCode.sasl_authentication_failed
            assert client.closed_by_peer()
    finally:
        secure.thread.stop()
    assert not [r for r in caplog.records if r.exc_info]
    assert any("cannot check credentials" in r.getMessage() for r in caplog.records)


def test_handshake_on_a_plaintext_listener_is_an_illegal_state(secure: SecureBroker) -> None:
    with _client(secure, "PLAINTEXT") as client:
        assert handshake(client, "PLAIN").error_code == ErrorCode.illegal_sasl_state
        assert client.metadata([]).brokers[0].port == secure.address("PLAINTEXT")[1]


def test_repeated_failures_from_one_address_are_slowed_down(tmp_path: Path) -> None:
    secure = start_secure_broker(tmp_path, listeners=("SASL_PLAINTEXT://127.0.0.1:0",))
    try:
        waits = []
        for _ in range(4):
            with _client(secure) as client:
                handshake(client, "PLAIN")
                started = time.monotonic()
                answer = authenticate(client, plain(USER, "guess"))
                waits.append(time.monotonic() - started)
                assert answer.error_code == ErrorCode.sasl_authentication_failed
        # 0.1 s, doubling per failure: the fourth waits at least 0.8 s.
        assert waits[0] >= 0.09
        assert waits[3] >= 0.75
        # A success forgives the address.
        with _client(secure) as client:
            handshake(client, "PLAIN")
            assert authenticate(client, plain(USER, PASSWORD)).error_code == ErrorCode.none
        with _client(secure) as client:
            handshake(client, "PLAIN")
            started = time.monotonic()
            authenticate(client, plain(USER, "guess"))
            assert time.monotonic() - started < 0.75
    finally:
        secure.thread.stop()


def test_scram_users_through_the_admin_client(secure: SecureBroker) -> None:
    admin = AdminClient(secure.client_config("SASL_PLAINTEXT", "SCRAM-SHA-512"))
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192)
    futures = admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion("bob", info, b"bobs-password")]
    )
    for future in futures.values():
        future.result(30)
    described = admin.describe_user_scram_credentials(["bob"])["bob"].result(30)
    infos = described.scram_credential_infos
    assert [(i.mechanism, i.iterations) for i in infos] == [(ScramMechanism.SCRAM_SHA_256, 8192)]

    bob = secure.client_config(
        "SASL_PLAINTEXT", "SCRAM-SHA-256", user="bob", password="bobs-password"
    )
    # The credential made from the client's salted password logs bob in.
    assert AdminClient(bob).list_topics(timeout=30).brokers

    for future in admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion("bob", ScramMechanism.SCRAM_SHA_256)]
    ).values():
        future.result(30)
    with pytest.raises(KafkaException) as raised:
        admin.describe_user_scram_credentials(["bob"])["bob"].result(30)
    assert raised.value.args[0].code() == KafkaError.RESOURCE_NOT_FOUND


def test_out_of_range_iterations_are_refused(secure: SecureBroker) -> None:
    admin = AdminClient(secure.client_config("SASL_PLAINTEXT", "SCRAM-SHA-256"))
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 100)
    (future,) = admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion("carol", info, b"pw")]
    ).values()
    with pytest.raises(KafkaException) as raised:
        future.result(30)
    assert raised.value.args[0].code() == KafkaError.UNACCEPTABLE_CREDENTIAL


def test_reauthentication_setting_is_refused(secure: SecureBroker) -> None:
    admin = AdminClient(secure.client_config("PLAINTEXT"))
    resource = ConfigResource(ResourceType.BROKER, "0")
    (described,) = admin.describe_configs([resource]).values()
    assert described.result(30)["connections.max.reauth.ms"].value == "0"
    change = ConfigResource(
        ResourceType.BROKER, "0",
        incremental_configs=[ConfigEntry("connections.max.reauth.ms", "3600000",
                                         incremental_operation=AlterConfigOpType.SET)],
    )  # fmt: skip
    (future,) = admin.incremental_alter_configs([change]).values()
    with pytest.raises(KafkaException) as raised:
        future.result(30)
    assert raised.value.args[0].code() == KafkaError.INVALID_CONFIG


@pytest.mark.parametrize(
    ("host", "warnings"), [("127.0.0.1", 0), ("0.0.0.0", 1)], ids=["loopback", "every-interface"]
)
def test_open_listener_on_other_interfaces_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, host: str, warnings: int
) -> None:
    caplog.set_level(logging.WARNING, logger="onceflow.broker")
    with BrokerThread(BrokerConfig(data_dir=tmp_path / "data", host=host, port=0)):
        pass
    lines = [r for r in caplog.records if "without authentication" in r.getMessage()]
    assert len(lines) == warnings
