"""A raw Kafka wire connection: kio request entities out, kio response entities in.

The operator commands use it for the APIs confluent-kafka's AdminClient does not offer
(DescribeProducers, ListTransactions, DescribeTransactions, WriteTxnMarkers,
DescribeLogDirs); the broker tests use it to send exactly the bytes they mean. Given a
``ClientSecurity`` it speaks TLS and logs in with SASL PLAIN or SCRAM (SaslHandshake v1,
then SaslAuthenticate) before any other request, as Kafka's clients do.
"""

from __future__ import annotations

import io
import socket
import struct
from functools import cache
from typing import Any, Self

from kio.index import load_payload_module, load_response_schema
from kio.serial import entity_reader, entity_writer
from kio.static.constants import EntityType

from onceflow.broker.protocol import build
from onceflow.client_settings import ClientSecurity, SaslLogin
from onceflow.scram import ScramClient, ScramError, ScramMechanism

DEFAULT_TIMEOUT = 15.0
CLIENT_ID = "onceflow"
API_VERSIONS = 18
SASL_HANDSHAKE, SASL_HANDSHAKE_VERSION = 17, 1
SASL_AUTHENTICATE, SASL_AUTHENTICATE_VERSION = 36, 0
# ApiVersions v0 is understood by every broker; its answer lists what else is.
_API_VERSIONS_PROBE = 0

_SIZE = struct.Struct(">i")


class WireError(Exception):
    """The broker's answer could not be read as the answer to the request sent."""


class ConnectionClosed(WireError):
    """The broker closed the connection instead of answering."""


class AuthenticationError(WireError):
    """The broker refused the SASL login (or proved to be no holder of the user's
    credential); the message is one line and never holds the password."""


def encode_request(request: Any, correlation_id: int, client_id: str = CLIENT_ID) -> bytes:
    """The size-prefixed frame of a kio request entity, with the header its version uses."""
    header_cls = request.__header_schema__
    header = build(
        header_cls,
        request_api_key=request.__api_key__,
        request_api_version=request.__version__,
        correlation_id=correlation_id,
        client_id=client_id,
    )
    buffer = io.BytesIO()
    buffer.write(b"\0\0\0\0")
    entity_writer(header_cls)(buffer, header)
    entity_writer(type(request))(buffer, request)
    data = buffer.getbuffer()
    _SIZE.pack_into(data, 0, len(data) - 4)
    return bytes(data)


@cache
def _response_readers(api_key: int, version: int) -> tuple[Any, Any]:
    schema = load_response_schema(api_key, version)
    return entity_reader(schema.__header_schema__), entity_reader(schema)


def decode_response(frame: bytes, api_key: int, version: int) -> tuple[int, Any]:
    """(correlation id, response entity) of a response frame without its size prefix."""
    read_header, read_body = _response_readers(api_key, version)
    header, used = read_header(frame, 0)
    response, _ = read_body(frame, used)
    return header.correlation_id, response


def request_module(api_key: int, version: int) -> Any:
    """The kio module holding the request classes of one API version."""
    return load_payload_module(api_key, version, EntityType.request)


def split_address(address: str) -> tuple[str, int]:
    """("host", port) of "host:port" (IPv6 hosts in brackets or bare)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port)


class KafkaConnection:
    """One TCP connection speaking Kafka frames; responses are read in request order.

    With ``security``, the connection is wrapped in TLS and logged in over SASL before
    the constructor returns; a refused login raises AuthenticationError, a TLS failure
    ``ssl.SSLError`` (an OSError).
    """

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float = DEFAULT_TIMEOUT,
        client_id: str = CLIENT_ID,
        security: ClientSecurity | None = None,
    ) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if security is not None and security.tls is not None:
            try:
                sock = security.tls.wrap_socket(sock, server_hostname=host)
            except OSError:
                sock.close()
                raise
        self.sock = sock
        self.client_id = client_id
        self._next_correlation_id = 1
        self._versions: dict[int, tuple[int, int]] | None = None
        if security is not None and security.sasl is not None:
            try:
                self._log_in(security.sasl)
            except BaseException:
                self.close()
                raise

    @classmethod
    def connect(
        cls,
        address: str,
        timeout: float = DEFAULT_TIMEOUT,
        security: ClientSecurity | None = None,
    ) -> Self:
        host, port = split_address(address)
        return cls(host, port, timeout, security=security)

    def _log_in(self, login: SaslLogin) -> None:
        handshake = request_module(SASL_HANDSHAKE, SASL_HANDSHAKE_VERSION)
        answer = self.request(handshake.SaslHandshakeRequest(mechanism=login.mechanism))
        if answer.error_code != 0:
            enabled = ", ".join(answer.mechanisms) or "none"
            raise AuthenticationError(
                f"the broker does not offer SASL {login.mechanism} (it offers {enabled})"
            )
        if login.mechanism == "PLAIN":
            self._authenticate(f"\0{login.username}\0{login.password}".encode(), login)
            return
        scram = ScramClient(ScramMechanism.from_name(login.mechanism), login.username,
                            login.password)  # fmt: skip
        try:
            server_first = self._authenticate(scram.first(), login)
            server_final = self._authenticate(scram.final(server_first), login)
            scram.check(server_final)
        except ScramError as exc:
            raise AuthenticationError(
                f"SASL {login.mechanism} as {login.username}: {exc}"
            ) from None

    def _authenticate(self, auth_bytes: bytes, login: SaslLogin) -> bytes:
        m = request_module(SASL_AUTHENTICATE, SASL_AUTHENTICATE_VERSION)
        try:
            answer = self.request(m.SaslAuthenticateRequest(auth_bytes=auth_bytes))
        except ConnectionClosed:
            raise AuthenticationError(
                f"SASL {login.mechanism} as {login.username}: the broker closed the connection"
            ) from None
        if answer.error_code != 0:
            why = answer.error_message or f"error {answer.error_code}"
            raise AuthenticationError(f"SASL {login.mechanism} as {login.username}: {why}")
        return bytes(answer.auth_bytes)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def next_correlation_id(self) -> int:
        correlation_id = self._next_correlation_id
        self._next_correlation_id += 1
        return correlation_id

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, request: Any) -> int:
        """Send a request without waiting; returns its correlation id."""
        correlation_id = self.next_correlation_id()
        self.send_bytes(encode_request(request, correlation_id, self.client_id))
        return correlation_id

    def _read_exactly(self, size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            try:
                chunk = self.sock.recv(size - len(chunks))
            except ConnectionResetError as exc:
                raise ConnectionClosed("connection reset by the broker") from exc
            if not chunk:
                raise ConnectionClosed(f"connection closed after {len(chunks)}/{size} bytes")
            chunks += chunk
        return bytes(chunks)

    def read_frame(self) -> bytes:
        (size,) = _SIZE.unpack(self._read_exactly(4))
        return self._read_exactly(size)

    def receive(self, api_key: int, version: int, correlation_id: int) -> Any:
        """Read the next response, which must answer ``correlation_id``."""
        got, response = decode_response(self.read_frame(), api_key, version)
        if got != correlation_id:
            raise WireError(f"response to {got} while waiting for {correlation_id}")
        return response

    def request(self, request: Any) -> Any:
        correlation_id = self.send(request)
        return self.receive(request.__api_key__, request.__version__, correlation_id)

    def version_for(self, api_key: int, supported: range) -> int | None:
        """The highest version of ``api_key`` both this code (``supported``) and the
        broker speak, or None when they share none."""
        if self._versions is None:
            m = request_module(API_VERSIONS, _API_VERSIONS_PROBE)
            answer = self.request(m.ApiVersionsRequest())
            self._versions = {a.api_key: (a.min_version, a.max_version) for a in answer.api_keys}
        low, high = self._versions.get(api_key, (0, -1))
        best = min(high, supported.stop - 1)
        return best if best >= max(low, supported.start) else None
