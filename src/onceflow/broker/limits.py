"""Per-broker connection limits and per-connection in-flight limits.

Kafka's names where it has them: ``max.connections`` and ``max.connections.per.ip``
(a connection over either is closed at once, before a byte is read). Kafka bounds
queued requests broker-wide (``queued.max.requests``); a single-loop broker bounds them
per connection instead, so one client that pipelines without reading its answers stalls
only itself: past the limit its connection is not read until answers drain.
"""

from __future__ import annotations

import asyncio
from collections import Counter


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


class InFlight:
    """Requests, and their bytes, that a connection has sent and whose answers are not
    written yet; the connection is read only while both are under their limits."""

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests = 0
        self.bytes = 0
        self._freed = asyncio.Event()
        self._closed = False

    async def wait_for_room(self) -> None:
        while (
            self.requests >= self.max_requests or self.bytes >= self.max_bytes
        ) and not self._closed:
            self._freed.clear()
            await self._freed.wait()

    def take(self, size: int) -> None:
        self.requests += 1
        self.bytes += size

    def release(self, size: int) -> None:
        self.requests -= 1
        self.bytes -= size
        self._freed.set()

    def close(self) -> None:
        """The answers will never be written (the connection is going): stop waiting."""
        self._closed = True
        self._freed.set()
