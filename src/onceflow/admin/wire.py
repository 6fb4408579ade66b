"""A raw Kafka wire connection: kio request entities out, kio response entities in.

The operator commands use it for the APIs confluent-kafka's AdminClient does not offer
(DescribeProducers, ListTransactions, DescribeTransactions, WriteTxnMarkers,
DescribeLogDirs); the broker tests use it to send exactly the bytes they mean.
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

DEFAULT_TIMEOUT = 15.0
CLIENT_ID = "onceflow"
API_VERSIONS = 18
# ApiVersions v0 is understood by every broker; its answer lists what else is.
_API_VERSIONS_PROBE = 0

_SIZE = struct.Struct(">i")


class WireError(Exception):
    """The broker's answer could not be read as the answer to the request sent."""


class ConnectionClosed(WireError):
    """The broker closed the connection instead of answering."""


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
    """One TCP connection speaking Kafka frames; responses are read in request order."""

    def __init__(
        self, host: str, port: int, timeout: float = DEFAULT_TIMEOUT, client_id: str = CLIENT_ID
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client_id = client_id
        self._next_correlation_id = 1
        self._versions: dict[int, tuple[int, int]] | None = None

    @classmethod
    def connect(cls, address: str, timeout: float = DEFAULT_TIMEOUT) -> Self:
        host, port = split_address(address)
        return cls(host, port, timeout)

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
