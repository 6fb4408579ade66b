"""TLS for the SSL and SASL_SSL listeners, and certificates for local use.

The server side is Python's ``ssl`` module. Certificates are made with the
``cryptography`` package: ``onceflow broker --tls-self-signed DIR`` writes a CA and a
server certificate signed by it, so clients can be told to trust the CA file.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import ipaddress
import os
import ssl
from pathlib import Path
from typing import Any

#: Names a self-signed server certificate is valid for, besides the advertised hosts.
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
CA_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server.key"


class TlsError(Exception):
    """TLS cannot be set up (missing or unreadable files); the message is for humans."""


class ClientAuth(enum.StrEnum):
    """Whether clients must present a certificate (Kafka's ssl.client.auth)."""

    NONE = "none"
    REQUESTED = "requested"
    REQUIRED = "required"


@dataclasses.dataclass(frozen=True, slots=True)
class TlsConfig:
    """The server's certificate and key, and how client certificates are checked."""

    certfile: Path
    keyfile: Path
    #: CA certificates trusted for client certificates (needed unless client_auth is none).
    cafile: Path | None = None
    client_auth: ClientAuth = ClientAuth.NONE


def server_context(config: TlsConfig) -> ssl.SSLContext:
    """An SSL context for the listeners; raises TlsError with a readable reason."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.certfile, config.keyfile)
        if config.cafile is not None:
            context.load_verify_locations(cafile=config.cafile)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot load TLS certificate or key: {exc}") from exc
    if config.client_auth is not ClientAuth.NONE:
        if config.cafile is None:
            raise TlsError("client certificates need a CA file to check them against")
        context.verify_mode = (
            ssl.CERT_REQUIRED if config.client_auth is ClientAuth.REQUIRED else ssl.CERT_OPTIONAL
        )
    return context


def certificate_principal(ssl_object: Any) -> str | None:
    """Kafka's default principal of a TLS client: ``User:`` and the certificate's
    subject as an RFC 4514 distinguished name; None when no certificate was shown."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    from cryptography import x509

    return "User:" + x509.load_der_x509_certificate(der).subject.rfc4514_string()


# -- certificates for local use -------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Authority:
    """A CA that can sign certificates: its certificate and private key objects."""

    certificate: Any
    key: Any

    def pem(self) -> bytes:
        return _certificate_pem(self.certificate)


def make_authority(common_name: str = "onceflow local CA", days: int = 3650) -> Authority:
    """A new self-signed CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = _new_key()
    name = _name(common_name)
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Authority(certificate, key)


def issue_certificate(
    authority: Authority,
    common_name: str,
    *,
    names: tuple[str, ...] = (),
    client: bool = False,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) signed by ``authority``: a server certificate
    valid for ``names`` (DNS names or IP addresses), or a client one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = _new_key()
    now = _now()
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after or now + datetime.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
        )
    certificate = builder.sign(authority.key, hashes.SHA256())
    return _certificate_pem(certificate), _key_pem(key)


@dataclasses.dataclass(frozen=True, slots=True)
class SelfSignedFiles:
    """What ``write_self_signed`` left in its directory."""

    ca_file: Path
    certfile: Path
    keyfile: Path


def write_self_signed(directory: Path, hosts: tuple[str, ...] = ()) -> SelfSignedFiles:
    """A CA and a server certificate for localhost and ``hosts`` in ``directory``.

    Files already there are kept, so a restarted broker presents a certificate its
    clients still trust; keys are readable by the owner only.
    """
    directory = Path(directory)
    files = SelfSignedFiles(
        directory / CA_FILE, directory / SERVER_CERT_FILE, directory / SERVER_KEY_FILE
    )
    if files.ca_file.exists() and files.certfile.exists() and files.keyfile.exists():
        return files
    try:
        directory.mkdir(parents=True, exist_ok=True)
        authority = make_authority()
        names = tuple(dict.fromkeys((*LOCAL_NAMES, *hosts)))
        cert_pem, key_pem = issue_certificate(authority, "localhost", names=names)
        _write_private(directory / CA_KEY_FILE, _key_pem(authority.key))
        files.ca_file.write_bytes(authority.pem())
        _write_private(files.keyfile, key_pem)
        files.certfile.write_bytes(cert_pem)
    except OSError as exc:
        raise TlsError(f"cannot write certificates to {directory}: {exc.strerror or exc}") from exc
    return files


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _ca_key_usage() -> Any:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=True, key_cert_sign=True, crl_sign=True,
        content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _new_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "onceflow"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _general_name(name: str) -> Any:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _certificate_pem(certificate: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return certificate.public_bytes(Encoding.PEM)


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
