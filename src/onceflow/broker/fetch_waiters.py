"""Long-polling fetches parked per partition.

A fetch that has not yet got its min_bytes registers on each partition it reads; new
visible data on a partition (its high watermark or last stable offset moved) wakes the
fetches registered there and no others, so appends to one partition do not make every
waiting fetch of the broker rebuild its response.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Hashable, Iterable


class FetchWaiters:
    """Futures of parked fetches, by the partition they wait on."""

    def __init__(self) -> None:
        self._by_partition: dict[Hashable, set[asyncio.Future[None]]] = {}
        #: Fetches woken so far (for tests and metrics: a wake-up rebuilds a response).
        self.wakeups = 0

    def parked(self, partition: Hashable) -> int:
        """How many fetches wait on ``partition`` now."""
        return len(self._by_partition.get(partition, ()))

    def notify(self, partition: Hashable) -> None:
        """``partition`` has new visible data: wake the fetches waiting on it."""
        for waiter in self._by_partition.pop(partition, ()):
            if not waiter.done():
                waiter.set_result(None)
                self.wakeups += 1

    async def wait(self, partitions: Iterable[Hashable], timeout: float) -> None:
        """Return once one of ``partitions`` has new data, or after ``timeout`` seconds."""
        waiter = asyncio.get_running_loop().create_future()
        keys = list(dict.fromkeys(partitions))
        for key in keys:
            self._by_partition.setdefault(key, set()).add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout)
        finally:
            for key in keys:
                parked = self._by_partition.get(key)
                if parked is not None:
                    parked.discard(waiter)
                    if not parked:
                        del self._by_partition[key]
