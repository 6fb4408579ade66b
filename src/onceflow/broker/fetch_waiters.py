"""Long-polling fetches parked per partition.

A fetch that has not yet got its min_bytes registers on each partition it reads; new
visible data on a partition (its high watermark or last stable offset moved) wakes the
fetches registered there and no others, so appends to one partition do not make every
waiting fetch of the broker rebuild its response. A fetch may also say when it is ready
(its min_bytes reached): until then new data leaves it parked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Iterable


class FetchWaiters:
    """Futures of parked fetches, by the partition they wait on."""

    def __init__(self) -> None:
        self._by_partition: dict[Hashable, set[asyncio.Future[None]]] = {}
        self._ready: dict[asyncio.Future[None], Callable[[], bool]] = {}
        #: Fetches woken so far (for tests and metrics: a wake-up rebuilds a response).
        self.wakeups = 0

    def parked(self, partition: Hashable) -> int:
        """How many fetches wait on ``partition`` now."""
        return len(self._by_partition.get(partition, ()))

    def notify(self, partition: Hashable) -> None:
        """``partition`` has new visible data: wake the fetches waiting on it that are
        ready."""
        parked = self._by_partition.get(partition)
        if not parked:
            return
        for waiter in list(parked):
            ready = self._ready.get(waiter)
            if waiter.done() or (ready is not None and not ready()):
                continue
            waiter.set_result(None)
            self.wakeups += 1
            parked.discard(waiter)
        if not parked:
            del self._by_partition[partition]

    async def wait(
        self,
        partitions: Iterable[Hashable],
        timeout: float,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        """Return once one of ``partitions`` has new data (and ``ready()``, if given,
        is true), or after ``timeout`` seconds."""
        waiter = asyncio.get_running_loop().create_future()
        keys = list(dict.fromkeys(partitions))
        for key in keys:
            self._by_partition.setdefault(key, set()).add(waiter)
        if ready is not None:
            self._ready[waiter] = ready
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout)
        finally:
            self._ready.pop(waiter, None)
            for key in keys:
                parked = self._by_partition.get(key)
                if parked is not None:
                    parked.discard(waiter)
                    if not parked:
                        del self._by_partition[key]
