"""A TCP proxy that speaks just enough Kafka to lose or delay one kind of response.

Clients connect to the proxy instead of the brokers. It reads the size-prefixed request
frames (API key, version and correlation id are the first 8 bytes of each) and pairs
every response with its request, so it can swallow or hold back the response to a
chosen API (say Produce: the broker appended, the acknowledgement never arrives). It
rewrites the broker addresses in Metadata and FindCoordinator responses to addresses
of its own, one listener per upstream broker, so clients keep going through it after
bootstrap. Nothing in it is specific to onceflow's broker: it works in front of any
Kafka-compatible cluster.

In front of TLS listeners (SSL, SASL_SSL) it must read the frames, so it ends TLS on
both sides (``ProxyTls``): clients reach it over TLS with a certificate of its own
(they are told to trust its CA), and it reaches the brokers over TLS as the clients'
settings say. SASL passes through untouched: SaslHandshake and SaslAuthenticate are
Kafka frames like any other, so the broker authenticates the clients themselves.

The proxy runs its own asyncio loop on a thread; the fault methods are thread-safe.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import io
import logging
import ssl
import struct
import threading
from collections.abc import Callable
from functools import cache
from typing import Any, Protocol

from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import i32

from onceflow.varint import read_uvarint

log = logging.getLogger(__name__)

_SIZE = struct.Struct(">i")
_HEADER = struct.Struct(">hhi")
_INT16 = struct.Struct(">h")
PRODUCE, METADATA, FIND_COORDINATOR = 0, 3, 10
PRODUCE_FLEXIBLE_FROM = 9
MAX_FRAME = 256 * 1024 * 1024
# A request awaiting its response: API key, version, correlation id, rewriter's context.
_Pending = tuple[int, int, int, Any]


@dataclasses.dataclass
class _Rule:
    """What to do with the responses to one API key."""

    api_key: int
    skip: int  # let this many responses through first
    count: int  # then act on this many
    delay: float | None  # None: drop the response and reset the connection
    hits: int = 0


@dataclasses.dataclass(frozen=True)
class ProxyTls:
    """TLS on both sides of the proxy: ``server`` is its face to the clients, ``client``
    how it connects to the brokers."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def expects_response(frame: bytes) -> bool:
    """False only for a Produce request with ``acks=0``, which the broker never answers."""
    api_key, version, _ = _HEADER.unpack_from(frame)
    if api_key != PRODUCE:
        return True
    at = _HEADER.size
    (client_id_length,) = _INT16.unpack_from(frame, at)
    at += 2 + max(client_id_length, 0)
    flexible = version >= PRODUCE_FLEXIBLE_FROM
    if flexible:  # request header v2: tagged fields after the client id
        tags, at = read_uvarint(frame, at)
        for _ in range(tags):
            _tag, at = read_uvarint(frame, at)
            size, at = read_uvarint(frame, at)
            at += size
    if flexible:  # compact nullable transactional id: length + 1
        length, at = read_uvarint(frame, at)
        at += max(length - 1, 0)
    else:
        (length,) = _INT16.unpack_from(frame, at)
        at += 2 + max(length, 0)
    (acks,) = _INT16.unpack_from(frame, at)
    return acks != 0


@cache
def _codec(kind: str, api_key: int, version: int) -> tuple[Any, Any, Any, Any]:
    load = load_request_schema if kind == "request" else load_response_schema
    schema = load(api_key, version)
    header = schema.__header_schema__
    return (
        entity_reader(header),
        entity_reader(schema),
        entity_writer(header),
        entity_writer(schema),
    )


def decode(kind: str, api_key: int, version: int, frame: bytes) -> tuple[Any, Any]:
    """The header and body of a ``kind`` ("request" or "response") frame (no size)."""
    read_header, read_body, _, _ = _codec(kind, api_key, version)
    header, used = read_header(frame, 0)
    body, _ = read_body(frame, used)
    return header, body


def encode(kind: str, api_key: int, version: int, header: Any, body: Any) -> bytes:
    """A ``kind`` frame (without size) from the header and body ``decode`` gave."""
    _, _, write_header, write_body = _codec(kind, api_key, version)
    buffer = io.BytesIO()
    write_header(buffer, header)
    write_body(buffer, body)
    return buffer.getvalue()


class Rewriter(Protocol):
    """Changes requests on their way to the broker and their responses on the way back
    (the proxy's loop calls it, one frame at a time)."""

    def request(self, api_key: int, version: int, frame: bytes) -> tuple[bytes, Any]:
        """The frame to send instead, and what ``response`` needs to know of it."""
        ...

    def response(self, api_key: int, version: int, frame: bytes, context: Any) -> bytes:
        """The response frame to hand the client instead."""
        ...


def _readdress(api_key: int, body: Any, address: Callable[[str, int], tuple[str, int]]) -> Any:
    def moved(entity: Any) -> Any:
        host, port = address(entity.host, int(entity.port))
        return dataclasses.replace(entity, host=host, port=i32(port))

    if api_key == METADATA:
        return dataclasses.replace(body, brokers=tuple(moved(b) for b in body.brokers))
    if hasattr(body, "coordinators"):  # FindCoordinator v4+
        return dataclasses.replace(body, coordinators=tuple(moved(c) for c in body.coordinators))
    if body.host:  # v0-v3; an error answer has no address
        return moved(body)
    return body


def rewrite_addresses(
    api_key: int, version: int, frame: bytes, address: Callable[[str, int], tuple[str, int]]
) -> bytes:
    """A Metadata or FindCoordinator response frame (without size) with every broker
    address passed through ``address``."""
    header, body = decode("response", api_key, version, frame)
    return encode("response", api_key, version, header, _readdress(api_key, body, address))


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    return host, int(port)


async def _read_frame(reader: asyncio.StreamReader) -> bytes | None:
    try:
        (size,) = _SIZE.unpack(await reader.readexactly(4))
        if not 0 < size <= MAX_FRAME:
            return None
        return await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


class KafkaProxy:
    """Forwards Kafka connections to ``upstream`` ("host:port", or a comma-separated
    bootstrap list: one listener each, so clients can bootstrap while a node is down),
    with injectable faults; ``tls`` when the brokers' listeners speak TLS; ``rewriter``
    changes requests and responses on the way."""

    def __init__(
        self,
        upstream: str,
        host: str = "127.0.0.1",
        tls: ProxyTls | None = None,
        rewriter: Rewriter | None = None,
    ) -> None:
        self.upstreams = [_address(part) for part in upstream.split(",") if part.strip()]
        self.host = host
        self.tls = tls
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._listeners: dict[tuple[str, int], tuple[asyncio.AbstractServer, int]] = {}
        self._connections: set[asyncio.StreamWriter] = set()
        self._rules: list[_Rule] = []
        self._cut_until = 0.0
        self.stats: collections.Counter[str] = collections.Counter()
        self.rewriter = rewriter
        self.bootstrap = ""

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> KafkaProxy:
        """Listen (for the bootstrap broker) and return once clients can connect."""
        self._thread.start()
        ports = [self._call(self._listen(upstream)) for upstream in self.upstreams]
        self.bootstrap = ",".join(f"{self.host}:{port}" for port in ports)
        return self

    def stop(self) -> None:
        """Close every listener and connection and end the loop's thread."""
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> KafkaProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _drop(self, writer: asyncio.StreamWriter) -> None:
        """Close a connection at once. A TLS close would first wait for the peer's
        close_notify, and a client that never learns its connection died waits out its
        request timeout instead of retrying on a new one."""
        if self.tls is not None:
            writer.transport.abort()
        else:
            writer.close()

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    # -- faults -----------------------------------------------------------------------

    def lose_responses(self, api_key: int, *, count: int = 1, skip: int = 0) -> None:
        """Swallow the next ``count`` responses to ``api_key`` after letting ``skip``
        through, and reset each connection that lost one: the broker acted on the
        request, the client never hears so and retries on a new connection."""
        self._loop.call_soon_threadsafe(self._rules.append, _Rule(api_key, skip, count, None))

    def delay_responses(
        self, api_key: int, seconds: float, *, count: int = 1, skip: int = 0
    ) -> None:
        """Hold the next ``count`` responses to ``api_key`` for ``seconds`` each."""
        self._loop.call_soon_threadsafe(self._rules.append, _Rule(api_key, skip, count, seconds))

    def cut(self, seconds: float) -> None:
        """Drop every connection and refuse new ones for ``seconds``, then heal."""
        self._call(self._cut(seconds))

    async def _cut(self, seconds: float) -> None:
        self._cut_until = self._loop.time() + seconds
        self.stats["cuts"] += 1
        for writer in list(self._connections):
            self._drop(writer)

    # -- plumbing ---------------------------------------------------------------------

    async def _listen(self, upstream: tuple[str, int]) -> int:
        if upstream not in self._listeners:

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await self._serve(upstream, reader, writer)

            server = await asyncio.start_server(
                handle, self.host, 0, ssl=self.tls.server if self.tls else None
            )
            port = server.sockets[0].getsockname()[1]
            self._listeners[upstream] = (server, port)
        return self._listeners[upstream][1]

    async def _shutdown(self) -> None:
        for writer in list(self._connections):
            self._drop(writer)
        for server, _ in self._listeners.values():
            server.close()

    def _proxied(self, host: str, port: int) -> tuple[str, int]:
        known = self._listeners.get((host, port))
        if known is None:
            # Listening is quick but async; rewriting runs inside the loop, so schedule it
            # and answer with the port once it exists (see _ensure_listeners).
            raise LookupError((host, port))
        return self.host, known[1]

    async def _ensure_listeners(self, api_key: int, version: int, frame: bytes) -> None:
        wanted: list[tuple[str, int]] = []

        def collect(host: str, port: int) -> tuple[str, int]:
            wanted.append((host, port))
            return host, port

        rewrite_addresses(api_key, version, frame, collect)
        for upstream in wanted:
            await self._listen(upstream)

    async def _serve(
        self,
        upstream: tuple[str, int],
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
    ) -> None:
        if self._loop.time() < self._cut_until:
            self.stats["refused"] += 1
            self._drop(client_writer)
            return
        try:
            broker_reader, broker_writer = await asyncio.open_connection(
                *upstream,
                ssl=self.tls.client if self.tls else None,
                server_hostname=upstream[0] if self.tls else None,
            )
        except OSError:
            self.stats["upstream_unreachable"] += 1
            self._drop(client_writer)
            return
        self._connections.update((client_writer, broker_writer))
        pending: collections.deque[_Pending] = collections.deque()
        tasks = [
            asyncio.create_task(self._requests(client_reader, broker_writer, pending)),
            asyncio.create_task(self._responses(broker_reader, client_writer, pending)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for writer in (client_writer, broker_writer):
                self._drop(writer)
                self._connections.discard(writer)

    async def _requests(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pending: collections.deque[_Pending],
    ) -> None:
        while (frame := await _read_frame(reader)) is not None:
            if len(frame) < _HEADER.size:
                return
            api_key, version, correlation = _HEADER.unpack_from(frame)
            context = None
            if self.rewriter is not None:
                frame, context = self.rewriter.request(api_key, version, frame)
            if expects_response(frame):
                pending.append((api_key, version, correlation, context))
            writer.write(_SIZE.pack(len(frame)) + frame)
            await writer.drain()

    def _rule_for(self, api_key: int) -> _Rule | None:
        for rule in self._rules:
            if rule.api_key == api_key:
                rule.hits += 1
                if rule.hits > rule.skip:
                    if rule.hits >= rule.skip + rule.count:
                        self._rules.remove(rule)
                    return rule
                return None
        return None

    async def _responses(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pending: collections.deque[_Pending],
    ) -> None:
        while (frame := await _read_frame(reader)) is not None:
            if not pending:
                return  # a response nobody asked for: the stream is not Kafka
            api_key, version, correlation, context = pending.popleft()
            rule = self._rule_for(api_key)
            if rule is not None and rule.delay is None:
                self.stats[f"lost:{api_key}"] += 1
                log.info("losing the response to api %d (correlation %d)", api_key, correlation)
                return  # closing resets the connection
            if rule is not None and rule.delay is not None:
                self.stats[f"delayed:{api_key}"] += 1
                await asyncio.sleep(rule.delay)
            if self.rewriter is not None:
                frame = self.rewriter.response(api_key, version, frame, context)
            if api_key in (METADATA, FIND_COORDINATOR):
                await self._ensure_listeners(api_key, version, frame)
                frame = rewrite_addresses(api_key, version, frame, self._proxied)
            writer.write(_SIZE.pack(len(frame)) + frame)
            await writer.drain()
