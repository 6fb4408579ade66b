"""The embedded broker: asyncio listener, per-connection request pipeline, lifecycle.

All broker state is mutated on one event loop, so handlers need no locks. Each
connection reads requests continuously and starts every handler at once, in request
order, so side effects (appends) happen in the order the client sent them; responses
are written back in that same order even when a later one is ready first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

from onceflow.broker.apis import API_TABLE
from onceflow.broker.config import BrokerConfig, FlushPolicy
from onceflow.broker.connection import enter_connection
from onceflow.broker.fetch_waiters import FetchWaiters
from onceflow.broker.groups import GroupCoordinator
from onceflow.broker.limits import (
    ConnectionLimits,
    InFlight,
    ReadDeadlines,
    ReadWatch,
    RequestMemory,
)
from onceflow.broker.log.disk import StorageOffline
from onceflow.broker.log.flusher import Flushable, GroupFlusher
from onceflow.broker.log.journal import Journal
from onceflow.broker.log.partition import LogConfig
from onceflow.broker.log.retention import LogMaintenance
from onceflow.broker.metrics import BrokerMetrics
from onceflow.broker.producer_ids import ProducerIdAllocator
from onceflow.broker.protocol import (
    ProtocolError,
    decode_request,
    encode_response,
    peek,
)
from onceflow.broker.security.listeners import Listener
from onceflow.broker.security.session import Security, Session, current_session
from onceflow.broker.security.tls import TlsError, server_context
from onceflow.broker.topics import TopicRegistry
from onceflow.broker.transactions import TransactionCoordinator

log = logging.getLogger(__name__)

_SIZE = struct.Struct(">i")
CLUSTER_ID = "onceflow-embedded"
MAX_UNAUTHENTICATED_REQUEST_BYTES = 512 * 1024
#: What a connection's stream buffers beyond what the broker has asked to read (it is
#: outside queued.max.request.bytes, so it is kept small), and the largest request
#: that never waits for request memory.
STREAM_READ_AHEAD_BYTES = 512 * 1024
#: Put on a connection's response queue after its last response: close once it is sent.
_LAST_RESPONSE = object()
#: The largest answer written by the connection's reader itself when it is ready at once
#: and nothing is pending before it: under asyncio's write buffer high-water mark
#: (64 KiB), so that the sender would not have waited to drain it either.
DIRECT_WRITE_MAX_BYTES = 16 * 1024


class BrokerStartError(Exception):
    """The broker could not start (port taken, data dir unusable); message is for humans."""


class Broker:
    """A single-node Kafka-compatible broker.

    Use as an async context manager (``async with Broker(config) as broker``) inside an
    event loop, or through ``run_in_thread`` from synchronous code.
    """

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self._servers: list[asyncio.Server] = []
        #: The listeners as bound (a port of 0 replaced by the one picked).
        self.listeners: list[Listener] = list(config.effective_listeners())
        self.security = Security(config)
        self._lock_fd: int | None = None
        self.fetch_waiters = FetchWaiters()
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.metrics = BrokerMetrics(self) if config.metrics_port is not None else None
        self.flusher = GroupFlusher(self.metrics.observe_flush_round if self.metrics else None)
        #: The loop the broker runs on (set by start): its state is touched only there.
        self.loop: asyncio.AbstractEventLoop | None = None
        self.limits = ConnectionLimits(config.max_connections, config.max_connections_per_ip)
        self.request_memory = RequestMemory(config.queued_max_request_bytes)
        self.read_deadlines = ReadDeadlines(config.request_read_timeout_ms / 1000)
        self._deadline_sweeper: asyncio.Task[None] | None = None
        self.topics: TopicRegistry
        self.producer_ids: ProducerIdAllocator
        self.groups: GroupCoordinator
        self.transactions: TransactionCoordinator
        self.maintenance = LogMaintenance(self)
        self.port = config.port
        self.cluster_id = CLUSTER_ID

    # -- lifecycle -------------------------------------------------------------

    @property
    def host(self) -> str:
        """The host clients connect to (the advertised one, never a wildcard)."""
        return self.config.client_host

    @property
    def bootstrap(self) -> str:
        """The ``bootstrap.servers`` value clients use (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def serving(self) -> bool:
        return bool(self._servers)

    def advertised_endpoint(self) -> tuple[str, int]:
        """(host, port) clients are told to connect to: those of the listener the
        current request arrived on (Metadata, FindCoordinator, DescribeCluster)."""
        session = current_session()
        listener = session.listener if session is not None else self.listeners[0]
        return listener.client_host(), listener.advertised_port or listener.port

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        ssl_context = self._ssl_context()
        self._open_data_dir()
        # Finish transactions a crash interrupted before any client can look.
        await self.transactions.start()
        self.maintenance.start()
        self._deadline_sweeper = asyncio.create_task(self.read_deadlines.run())
        for index, listener in enumerate(self.listeners):
            try:
                server = await asyncio.start_server(
                    functools.partial(self._serve_connection, index),
                    listener.host,
                    listener.port,
                    reuse_address=True,
                    limit=STREAM_READ_AHEAD_BYTES // 2,
                    ssl=ssl_context if listener.protocol.uses_tls else None,
                    ssl_handshake_timeout=(
                        self.config.authentication_timeout_ms / 1000
                        if listener.protocol.uses_tls
                        else None
                    ),
                )
            except OSError as exc:
                await self.stop()
                raise BrokerStartError(
                    f"cannot listen on {listener}: {exc.strerror or exc}"
                ) from exc
            self._servers.append(server)
            port = server.sockets[0].getsockname()[1]
            self.listeners[index] = dataclasses.replace(listener, port=port)
        self.port = self.listeners[0].port
        log.info("listening on %s", ", ".join(map(str, self.listeners)))
        self._warn_if_open()
        if self.metrics is not None:
            await self._serve_metrics(self.metrics)

    def _ssl_context(self) -> Any:
        if not any(listener.protocol.uses_tls for listener in self.listeners):
            return None
        if self.config.tls is None:
            raise BrokerStartError("SSL and SASL_SSL listeners need a certificate and key")
        try:
            return server_context(self.config.tls)
        except TlsError as exc:
            raise BrokerStartError(str(exc)) from exc

    def _warn_if_open(self) -> None:
        open_listeners = [
            str(listener)
            for listener in self.listeners
            if not listener.is_loopback and not listener.protocol.uses_sasl
        ]
        if open_listeners:
            log.warning(
                "%s accept%s clients from other hosts without authentication",
                ", ".join(open_listeners),
                "s" if len(open_listeners) == 1 else "",
            )

    async def _serve_metrics(self, metrics: BrokerMetrics) -> None:
        assert self.config.metrics_port is not None
        try:
            metrics.serve(self.config.host, self.config.metrics_port)
        except OSError as exc:
            await self.stop()
            raise BrokerStartError(
                f"cannot serve metrics on {self.config.host}:{self.config.metrics_port}: "
                f"{exc.strerror or exc}"
            ) from exc
        log.info("metrics on http://%s:%d/metrics", self.host, metrics.port)

    def _open_data_dir(self) -> None:
        data_dir = Path(self.config.data_dir)
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise BrokerStartError(
                f"data dir {data_dir} is not usable: {exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise BrokerStartError(
                f"data dir {data_dir} is in use by another onceflow broker"
            ) from exc
        try:
            self.topics = TopicRegistry(
                data_dir,
                LogConfig(segment_bytes=self.config.segment_bytes),
                self.fetch_waiters.notify,
            )
            self.producer_ids = ProducerIdAllocator(
                data_dir / "producer-ids.json", self.flusher.fail
            )
            self.groups = GroupCoordinator.open(self)
            self.transactions = TransactionCoordinator(
                self,
                Journal(data_dir / "transactions.journal", self.make_durable, self.flusher.fail),
                self.groups.commit_transactional_offsets,
                data_dir / "transactions.run",
            )
            # An id the journal holds may have been handed out just before a crash,
            # ahead of its reservation landing: never hand it out again.
            self.producer_ids.skip_past(
                max((txn.producer_id for txn in self.transactions.describe()), default=-1)
            )
        except OSError as exc:
            self._release_lock()
            raise BrokerStartError(
                f"data dir {data_dir} is not usable: {exc.strerror or exc}"
            ) from exc

    async def stop(self) -> None:
        """Stop accepting, finish flushing, close every file."""
        if self.metrics is not None:
            await self.metrics.close()
        if self._servers:
            for server in self._servers:
                server.close()
            # Aborting the transports ends each connection's read loop the normal way.
            for writer in self._connections.values():
                writer.transport.abort()
            await asyncio.gather(*self._connections, return_exceptions=True)
            for server in self._servers:
                await server.wait_closed()
            self._servers = []
        if self._deadline_sweeper is not None:
            self._deadline_sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._deadline_sweeper
            self._deadline_sweeper = None
        await self.maintenance.stop()
        if hasattr(self, "transactions"):
            await self.transactions.drain()
        await self.flusher.drain()
        self._close_storage()

    def _close_storage(self) -> None:
        # After a storage failure nothing more is written: not even a clean shutdown.
        durably = self.flusher.failure is None
        if hasattr(self, "groups"):
            self.groups.close(durably)
            del self.groups
        if hasattr(self, "transactions"):
            self.transactions.close(durably)
            del self.transactions
        if hasattr(self, "topics"):
            self.topics.close(durably)
            del self.topics
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- shared services for handlers -------------------------------------------

    @property
    def storage_error(self) -> StorageOffline | None:
        """Why the data dir is offline (every storage request is refused), or None."""
        return self.flusher.failure

    def make_durable(self, target: Flushable) -> Awaitable[None] | None:
        """Apply the flush policy to what was just appended to ``target`` (a partition or
        a journal): an awaitable that completes once it is on disk, or None when the
        policy leaves flushing to the OS (then it counts as durable at once)."""
        if self.config.flush is FlushPolicy.ALWAYS:
            return self.flusher.request(target)
        _, end = target.flush_targets()
        target.mark_durable(end)
        return None

    # -- connections -------------------------------------------------------------

    async def _serve_connection(
        self, listener_index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        ip = peer[0] if peer else ""
        refused = self.limits.admit(ip)
        if refused is not None:
            log.info("refusing connection from %s: %s", peer, refused)
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        enter_connection(peer)
        session = self.security.open_session(
            self.listeners[listener_index], writer.get_extra_info("ssl_object")
        )
        # Bounded by in_flight, which the sender wakes even when it stops for good.
        responses: asyncio.Queue[Any] = asyncio.Queue()
        in_flight = InFlight(
            self.config.max_inflight_requests, self.config.max_inflight_bytes, self.request_memory
        )
        watch = self.read_deadlines.watch(writer.transport)
        sender = asyncio.create_task(self._send_responses(responses, writer, in_flight))
        try:
            while not sender.done():
                await in_flight.wait_for_room()
                frame = await self._read_frame(reader, session, in_flight, watch)
                if frame is None:
                    break
                size = len(frame)
                outcome = self._dispatch(frame, session)
                # The next read may wait long: the request's bytes must not be held
                # meanwhile (they are counted in the request memory until answered).
                del frame
                if outcome is None:
                    in_flight.drop(size)
                elif _may_write_now(outcome, in_flight, writer):
                    # Saves the sender's task a wake-up per answer (most are ready at once).
                    writer.write(outcome)
                    in_flight.drop(size)
                else:
                    in_flight.take()
                    responses.put_nowait((outcome, size))
                if session.close_after_response:
                    responses.put_nowait((_LAST_RESPONSE, 0))
                    await sender
                    break
        except TimeoutError:
            log.info("closing connection from %s: not authenticated in time", peer)
        except ProtocolError as exc:
            if not watch.expired:  # else the deadline sweep has said why
                log.warning("closing connection from %s: %s", peer, exc)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Only loop teardown cancels a connection: one accepted while stop() ran, too
            # late for it to see. Python 3.11's stream callback logs a cancelled handler
            # task as an unhandled error with a traceback, so end it normally instead.
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            writer.close()
            # Cancelled here too at loop teardown: end normally (see above).
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
            self._connections.pop(task, None)
            self.limits.release(ip)
            self.read_deadlines.forget(watch)
            # After the sender: gives back the memory of requests that got no answer.
            in_flight.close()

    async def _read_frame(
        self,
        reader: asyncio.StreamReader,
        session: Session,
        in_flight: InFlight,
        watch: ReadWatch,
    ) -> bytes | None:
        if session.authenticated:
            return await self._read_frame_now(
                reader, self.config.max_request_bytes, in_flight, watch
            )
        # Until it has authenticated, a client has a deadline counted from its accept, and
        # small frames only (Kafka's sasl.server.max.receive.size).
        if session.deadline is None:
            session.deadline = time.monotonic() + self.config.authentication_timeout_ms / 1000
        async with asyncio.timeout(max(0.0, session.deadline - time.monotonic())):
            return await self._read_frame_now(
                reader, MAX_UNAUTHENTICATED_REQUEST_BYTES, in_flight, watch
            )

    async def _read_frame_now(
        self, reader: asyncio.StreamReader, limit: int, in_flight: InFlight, watch: ReadWatch
    ) -> bytes | None:
        """One request frame, counted in the broker's request memory as it arrives. The
        read deadline runs from the request's first byte, without the time the broker
        made it wait for memory."""
        try:
            first = await reader.readexactly(1)
        except asyncio.IncompleteReadError:
            return None
        watch.since = time.monotonic()
        try:
            prefix = first + await reader.readexactly(3)
        except asyncio.IncompleteReadError as exc:
            raise ProtocolError("connection closed inside a size prefix") from exc
        (size,) = _SIZE.unpack(prefix)
        if size < 8 or size > limit:
            raise ProtocolError(f"request size {size} is out of bounds")
        # A small request on a connection with nothing else unanswered (a heartbeat, a
        # fetch, metadata) is never held back: it costs no more than the read-ahead,
        # and a group must not fall apart because others send large produces.
        may_wait = size > STREAM_READ_AHEAD_BYTES or in_flight.bytes > 0
        chunks = []
        received = 0
        while received < size:
            if may_wait and self.request_memory.full:
                paused = time.monotonic()
                await in_flight.wait_for_memory(half_read=received > 0)
                watch.since += time.monotonic() - paused
            chunk = await reader.read(size - received)
            if not chunk:
                raise ProtocolError(f"connection closed after {received}/{size} bytes")
            in_flight.hold(len(chunk))
            chunks.append(chunk)
            received += len(chunk)
        watch.since = None
        in_flight.read_whole()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _dispatch(self, frame: bytes, session: Session) -> bytes | Awaitable[bytes] | None:
        """Decode one request and start its handler; returns the response or its promise."""
        head = peek(frame)
        session.admit(head.api_key)
        api = API_TABLE.get(head.api_key)
        if api is None:
            raise ProtocolError(f"unknown API key {head.api_key}")
        if not api.min_version <= head.api_version <= api.max_version:
            if api.unsupported_version is None:
                raise ProtocolError(f"unsupported version {head.api_version} of API {api.name}")
            return api.unsupported_version(self, frame)
        header, request = decode_request(frame, head.api_key, head.api_version)
        started = time.perf_counter()
        try:
            outcome = api.handler(self, header, request)
            if isinstance(outcome, Awaitable):
                # Started now, so waits (fsync, long poll) overlap with later requests.
                return asyncio.ensure_future(self._finish(api, head, request, started, outcome))
            self._observe(api, request, outcome, started)
            if outcome is None:
                return None
            return encode_response(head.api_key, head.api_version, head.correlation_id, outcome)
        except Exception as exc:
            self._observe_failure(api.name)
            raise self._handler_failed(api.name, exc) from exc

    async def _finish(
        self, api: Any, head: Any, request: Any, started: float, pending: Awaitable[Any]
    ) -> bytes:
        try:
            response = await pending
            self._observe(api, request, response, started)
            return encode_response(head.api_key, head.api_version, head.correlation_id, response)
        except Exception as exc:
            self._observe_failure(api.name)
            raise self._handler_failed(api.name, exc) from exc

    def _observe(self, api: Any, request: Any, response: Any, started: float) -> None:
        if self.metrics is not None:
            elapsed = time.perf_counter() - started
            self.metrics.observe_request(api.key, api.name, request, response, elapsed)

    def _observe_failure(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.observe_failure(name)

    def _handler_failed(self, name: str, exc: Exception) -> ProtocolError:
        """The error that closes the connection of a request its handler could not
        answer. A storage error (a write or sync that failed) takes the data dir offline
        and is logged once by the flusher; anything else is a bug, logged with its
        traceback."""
        if isinstance(exc, OSError):
            self.flusher.fail(exc)
            return ProtocolError(f"{name} not answered: {self.flusher.failure}")
        log.exception("handler %s failed", name)
        return ProtocolError(f"internal error in {name}")

    @staticmethod
    async def _send_responses(
        responses: asyncio.Queue[Any], writer: asyncio.StreamWriter, in_flight: InFlight
    ) -> None:
        try:
            while True:
                item, request_size = await responses.get()
                if item is _LAST_RESPONSE:
                    return
                data = await item if isinstance(item, Awaitable) else item
                writer.write(data)
                await writer.drain()
                in_flight.release(request_size)
        except (ProtocolError, ConnectionError) as exc:
            # The reader may be blocked waiting for the next request: abort wakes it.
            # A client that went away is routine; a request we could not answer is not.
            log.log(
                logging.WARNING if isinstance(exc, ProtocolError) else logging.DEBUG,
                "closing connection: %s",
                exc,
            )
            writer.transport.abort()
        finally:
            in_flight.close()


def _may_write_now(outcome: Any, in_flight: InFlight, writer: asyncio.StreamWriter) -> bool:
    """May a connection's reader write ``outcome`` itself? Only a small answer ready now,
    with none pending before it (answers go out in request order) and nothing left
    unsent in the transport's buffer."""
    return (
        in_flight.requests == 0
        and isinstance(outcome, bytes)
        and len(outcome) <= DIRECT_WRITE_MAX_BYTES
        and not writer.transport.get_write_buffer_size()
    )


class BrokerThread:
    """A broker running on its own event loop in a background thread."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.broker = Broker(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="onceflow-broker")
        self._thread.daemon = True

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def start(self) -> BrokerThread:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.broker.start(), self._loop).result()
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
            raise
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.broker.stop(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def __enter__(self) -> BrokerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def run_in_thread(config: BrokerConfig) -> Iterator[BrokerThread]:
    """Run a broker in a background thread for the duration of a ``with`` block."""
    with BrokerThread(config) as running:
        yield running
