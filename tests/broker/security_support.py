"""A broker with every kind of listener, its TLS files and users, and client settings
for each listener, shared by the security tests."""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path
from typing import Any

from onceflow.admin.wire import KafkaConnection, request_module
from onceflow.broker.config import BrokerConfig
from onceflow.broker.security.credentials import CredentialStore
from onceflow.broker.security.listeners import Listener, SecurityProtocol, build_listeners
from onceflow.broker.security.scram import ScramCredential, ScramMechanism
from onceflow.broker.security.tls import (
    Authority,
    ClientAuth,
    TlsConfig,
    issue_certificate,
    make_authority,
)
from onceflow.broker.server import BrokerThread

HANDSHAKE, AUTHENTICATE = 17, 36
USER = "alice"
PASSWORD = "correct horse battery staple"
ALL_LISTENERS = tuple(f"{p.value}://127.0.0.1:0" for p in SecurityProtocol)


def add_user(data_dir: Path, user: str, password: str) -> None:
    store = CredentialStore(data_dir)
    for mechanism in ScramMechanism:
        store.upsert(user, mechanism, ScramCredential.from_password(mechanism, password))


@dataclasses.dataclass
class SecureBroker:
    """A running broker and the CA its TLS listeners' certificate is signed by."""

    thread: BrokerThread
    authority: Authority
    ca_file: Path

    def listener(self, protocol: str) -> Listener:
        return next(lst for lst in self.thread.broker.listeners if lst.protocol.value == protocol)

    def address(self, protocol: str) -> tuple[str, int]:
        listener = self.listener(protocol)
        return listener.host, listener.port

    def client_config(
        self,
        protocol: str,
        mechanism: str | None = "SCRAM-SHA-256",
        *,
        user: str = USER,
        password: str = PASSWORD,
        trust: bool = True,
    ) -> dict[str, Any]:
        """librdkafka settings for the listener of ``protocol``."""
        host, port = self.address(protocol)
        config: dict[str, Any] = {
            "bootstrap.servers": f"{host}:{port}",
            "security.protocol": protocol,
        }
        if protocol.startswith("SASL"):
            config |= {"sasl.mechanism": mechanism, "sasl.username": user,
                       "sasl.password": password}  # fmt: skip
        if protocol.endswith("SSL") and trust:
            config["ssl.ca.location"] = str(self.ca_file)
        return config

    def client_certificate(self, directory: Path, name: str, **validity: Any) -> tuple[Path, Path]:
        """(certificate, key) files of a client certificate signed by the broker's CA."""
        cert, key = issue_certificate(self.authority, name, client=True, **validity)
        (directory / f"{name}.pem").write_bytes(cert)
        (directory / f"{name}.key").write_bytes(key)
        return directory / f"{name}.pem", directory / f"{name}.key"

    def ssl_context(self) -> ssl.SSLContext:
        """A Python client context that trusts the broker's CA."""
        return ssl.create_default_context(cafile=self.ca_file)


def start_secure_broker(
    tmp: Path, *, listeners: tuple[str, ...] = ALL_LISTENERS, **config: Any
) -> SecureBroker:
    """A broker with ``listeners`` on ephemeral ports, self-signed TLS asking for (not
    requiring) client certificates, and the user alice."""
    data_dir = tmp / "data"
    authority = make_authority("test CA")
    ca_file = tmp / "ca.pem"
    ca_file.write_bytes(authority.pem())
    cert, key = issue_certificate(authority, "localhost", names=("127.0.0.1", "localhost"))
    (tmp / "server.pem").write_bytes(cert)
    (tmp / "server.key").write_bytes(key)
    add_user(data_dir, USER, PASSWORD)
    settings = BrokerConfig(
        data_dir=data_dir,
        port=0,
        listeners=build_listeners(listeners),
        tls=TlsConfig(tmp / "server.pem", tmp / "server.key", ca_file, ClientAuth.REQUESTED),
        **config,
    )
    return SecureBroker(BrokerThread(settings).start(), authority, ca_file)


def handshake(client: KafkaConnection, mechanism: str, version: int = 1) -> Any:
    m = request_module(HANDSHAKE, version)
    return client.request(m.SaslHandshakeRequest(mechanism=mechanism))


def authenticate(client: KafkaConnection, auth_bytes: bytes, version: int = 2) -> Any:
    m = request_module(AUTHENTICATE, version)
    return client.request(m.SaslAuthenticateRequest(auth_bytes=auth_bytes))


def plain(user: str, password: str) -> bytes:
    """A SASL PLAIN message."""
    return f"\0{user}\0{password}".encode()


def log_in(client: KafkaConnection, user: str, password: str = PASSWORD) -> None:
    """SASL PLAIN on a raw connection; fails the test unless it succeeds."""
    assert handshake(client, "PLAIN").error_code == 0
    assert authenticate(client, plain(user, password)).error_code == 0
