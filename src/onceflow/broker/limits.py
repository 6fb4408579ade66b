"""Per-broker connection limits, request memory and read deadlines, and per-connection
in-flight limits.

Kafka's names where it has them: ``max.connections`` and ``max.connections.per.ip``
(a connection over either is closed at once, before a byte is read), and
``queued.max.request.bytes`` (request bytes read and not yet answered, broker-wide:
past it, connections wait before reading more; a request is counted as its bytes
arrive, so announcing a large request and sending nothing holds nothing). Kafka bounds
queued requests broker-wide (``queued.max.requests``); a single-loop broker bounds them
per connection instead, so one client that pipelines without reading its answers stalls
only itself: past the limit its connection is not read until answers drain.

Kafka has no deadline for reading a request once it has begun (its idle timeout,
``connections.max.idle.ms``, never fires for a client that sends a byte now and then);
onceflow's ``request.read.timeout.ms`` closes a connection whose request has not
arrived whole that long after its first byte, so a slow loris holds nothing for long.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

log = logging.getLogger(__name__)


class ConnectionLimits:
    """Counts open connections in total and per client address."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self._per_ip: Counter[str] = Counter()
        self._total = 0

    def admit(self, ip: str) -> str | None:
        """Count a new connection from ``ip``; returns why it is refused, or None."""
        if self._total >= self.max_total:
            return f"the broker has max.connections={self.max_total} open"
        if self._per_ip[ip] >= self.max_per_ip:
            return f"{ip} has max.connections.per.ip={self.max_per_ip} open"
        self._total += 1
        self._per_ip[ip] += 1
        return None

    def release(self, ip: str) -> None:
        self._total -= 1
        self._per_ip[ip] -= 1
        if not self._per_ip[ip]:
            del self._per_ip[ip]


class RequestMemory:
    """The broker-wide budget of request bytes (``queued.max.request.bytes``).

    As Kafka's memory pool (non-strict): a connection may read whenever the budget is
    not used up, even more than what is left, so a request larger than the whole bound
    still gets in. Bytes count as they arrive, so that announcing a large request
    holds nothing; when the budget runs out with several requests half read, one of
    them (the finisher) is read to its end so that answering it frees memory (else
    every reader would wait for the others). Memory stays under the bound plus one
    request plus what each reading connection takes in one read (the stream buffer).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._freed = asyncio.Event()
        self._finisher: object | None = None

    @property
    def full(self) -> bool:
        return self.used >= self.max_bytes

    async def wait_for_room(self, reader: object, half_read: bool) -> None:
        """Wait until ``reader`` may read more: room in the budget, or, for a request
        already ``half_read``, its turn to finish."""
        while self.full:
            if half_read and self._finisher in (None, reader):
                self._finisher = reader
                return
            self._freed.clear()
            await self._freed.wait()

    def done_reading(self, reader: object) -> None:
        """``reader`` has read its request whole (or gone): another may finish."""
        if self._finisher is reader:
            self._finisher = None
            self._freed.set()

    def take(self, size: int) -> None:
        self.used += size

    def release(self, size: int) -> None:
        self.used -= size
        self._freed.set()


class InFlight:
    """Requests, and their bytes, that a connection has sent and whose answers are not
    written yet; the connection is read only while both are under their limits. The
    bytes also count in the broker's RequestMemory, from the moment they are read."""

    def __init__(self, max_requests: int, max_bytes: int, memory: RequestMemory) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests = 0
        self.bytes = 0
        self._memory = memory
        self._freed = asyncio.Event()
        self._closed = False

    async def wait_for_room(self) -> None:
        while (
            self.requests >= self.max_requests or self.bytes >= self.max_bytes
        ) and not self._closed:
            self._freed.clear()
            await self._freed.wait()

    async def wait_for_memory(self, half_read: bool) -> None:
        await self._memory.wait_for_room(self, half_read)

    def hold(self, size: int) -> None:
        """``size`` more bytes of a request have been read."""
        self.bytes += size
        self._memory.take(size)

    def read_whole(self) -> None:
        """The request being read has arrived whole."""
        self._memory.done_reading(self)

    def take(self) -> None:
        """The request just read is being handled and will be answered."""
        self.requests += 1

    def drop(self, size: int) -> None:
        """The request just read gets no answer (acks=0): its bytes are free now."""
        if self._closed:
            return  # close() gave them back already
        self.bytes -= size
        self._memory.release(size)

    def release(self, size: int) -> None:
        """A request's answer is written."""
        self.requests -= 1
        self.drop(size)
        self._freed.set()

    def close(self) -> None:
        """The answers will never be written (the connection is going): stop waiting,
        and give back the request memory still held (safe to call again)."""
        self._closed = True
        self._memory.done_reading(self)
        self._memory.release(self.bytes)
        self.bytes = 0
        self._freed.set()


class ReadWatch:
    """One connection's read in progress: since when it has waited for the rest of a
    request (None while idle between requests, or while waiting for request memory)."""

    __slots__ = ("expired", "since", "transport")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.since: float | None = None
        self.expired = False


class ReadDeadlines:
    """Closes connections whose request has not arrived whole ``timeout`` seconds
    after it began (``request.read.timeout.ms``). One sweep looks at every connection
    now and then, so a request read costs two clock reads, not a timer."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        # A connection is closed between 1 and 1.1 timeouts after its request began.
        self.interval = min(max(timeout / 10, 0.01), 1.0)
        self._watches: set[ReadWatch] = set()

    def watch(self, transport: Any) -> ReadWatch:
        watch = ReadWatch(transport)
        self._watches.add(watch)
        return watch

    def forget(self, watch: ReadWatch) -> None:
        self._watches.discard(watch)

    async def run(self) -> None:
        """Sweep until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        for watch in self._watches:
            if watch.since is not None and now - watch.since > self.timeout and not watch.expired:
                watch.expired = True
                log.warning(
                    "closing connection from %s: request not received whole within "
                    "request.read.timeout.ms=%d",
                    watch.transport.get_extra_info("peername"),
                    round(self.timeout * 1000),
                )
                watch.transport.abort()
