"""Group commit: one fsync round covers every append that arrived while the last ran.

Appends happen on the event loop; fsync runs on a worker thread. A produce that needs
durability asks for the next round and awaits it. While a round is running, new
requests accumulate and share the round after it, so the number of fsyncs per second
stays bounded by disk latency, not by the request rate.

A failed fsync is never retried (fail-stop, as Kafka takes a log dir offline): on Linux
the failed round may already have dropped the dirty pages, so a later successful fsync
would prove nothing. The flusher goes offline for good; every waiter, present and
future, gets StorageOffline, and nothing appended since the last good round is ever
acknowledged or made visible. A restart recovers from what is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from onceflow.broker.log.disk import StorageOffline

log = logging.getLogger(__name__)
#: The threads that run rounds (one hand-off and one wake-up of the loop per round,
#: however many files it syncs; a flusher runs one round at a time, so several let the
#: brokers of one process sync in parallel), and those that sync a round's other files
#: alongside it.
_ROUND_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="onceflow-flush")
_SYNC_THREADS = ThreadPoolExecutor(max_workers=6, thread_name_prefix="onceflow-fsync")


class Syncable(Protocol):
    def fsync(self) -> None: ...


def sync_all(files: Sequence[Syncable]) -> None:
    """fsync every file, concurrently (on a worker thread): concurrent fsyncs of
    different files share the filesystem's journal commits instead of queueing behind
    each other. Returns once all are done; raises the first failure."""
    others = [_SYNC_THREADS.submit(f.fsync) for f in files[1:]]
    failure: OSError | None = None
    try:
        files[0].fsync()
    except OSError as exc:
        failure = exc
    for other in others:
        try:
            other.result()
        except OSError as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


class Flushable(Protocol):
    """Something appended to on the event loop whose files a flush round syncs
    (a partition log, a coordinator journal)."""

    unflushed: set

    def flush_targets(self) -> tuple[Sequence[Syncable], int]: ...

    def mark_durable(self, offset: int) -> None: ...


#: Told (seconds, files synced, durability requests served) after each fsync round.
RoundObserver = Callable[[float, int, int], None]


class GroupFlusher:
    """Batches fsyncs of dirty logs and then tells each how far it is durable.

    A round is driven by callbacks rather than a task: its thread hands the result
    straight to ``_round_done`` on the loop, which answers the round's waiters and starts
    the next round in the same loop iteration (a task would take one more)."""

    def __init__(self, on_round: RoundObserver | None = None) -> None:
        self._on_round = on_round
        self._dirty: dict[Flushable, None] = {}
        self._waiters: list[asyncio.Future[None]] = []
        #: Done once the rounds stop (no waiter left); None while none is due.
        self._running: asyncio.Future[None] | None = None
        #: Set by the first storage failure; the data dir stays offline until restart.
        self.failure: StorageOffline | None = None

    def request(self, partition: Flushable) -> asyncio.Future[None]:
        """A future that completes once everything appended to ``partition`` is on disk."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        if self.failure is not None:
            waiter.set_exception(self.failure)
            return waiter
        self._dirty[partition] = None
        self._waiters.append(waiter)
        if self._running is None:
            self._running = loop.create_future()
            # From the next iteration: what else this one appends shares the round.
            loop.call_soon(self._guarded, self._start_round)
        return waiter

    def piggyback(self, target: Flushable) -> None:
        """Have the next round (whatever starts it) sync ``target`` too, without
        starting one or waiting for it."""
        if self.failure is None:
            self._dirty[target] = None

    def _guarded(self, step: Callable[..., None], *args: Any) -> None:
        """Run a round's step; if it raises (a bug), stop the rounds so that the next
        request starts afresh rather than waiting behind a round that never ends."""
        try:
            step(*args)
        except BaseException:
            self._stop()
            raise

    def _start_round(self) -> None:
        """Sync everything dirty for the waiters so far, on the round thread."""
        if not self._waiters:
            self._stop()
            return
        partitions = list(self._dirty)
        waiters = self._waiters
        self._dirty = {}
        self._waiters = []
        targets = [(p, *p.flush_targets()) for p in partitions]
        segments = [s for _, segs, _ in targets for s in segs]
        started = time.perf_counter()
        if not segments:
            self._round_done(targets, waiters, started, 0, None)
            return
        loop = asyncio.get_running_loop()
        _ROUND_THREADS.submit(self._sync, loop, segments, (targets, waiters, started))

    def _sync(self, loop: asyncio.AbstractEventLoop, segments: list[Syncable], round_: Any) -> None:
        """On the round thread: sync, then hand the outcome to the loop."""
        failure: BaseException | None = None
        try:
            sync_all(segments)
        except Exception as exc:
            failure = exc
        # The loop is closed only after the broker drained its rounds, unless its
        # teardown was abnormal; then nobody waits for this round any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(
                self._guarded, self._round_done, *round_, len(segments), failure
            )

    def _round_done(
        self,
        targets: list[tuple[Flushable, Sequence[Syncable], int]],
        waiters: list[asyncio.Future[None]],
        started: float,
        files: int,
        failure: BaseException | None,
    ) -> None:
        if failure is not None:
            # Anything but an OSError is a bug; either way nothing is known durable.
            self.fail(failure if isinstance(failure, OSError) else OSError(repr(failure)))
            for waiter in waiters + self._waiters:
                if not waiter.done():
                    waiter.set_exception(self.failure)
            self._waiters = []
            self._stop()
            return
        if self._on_round is not None:
            self._on_round(time.perf_counter() - started, files, len(waiters))
        for partition, _, end in targets:
            partition.mark_durable(end)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._start_round()

    def _stop(self) -> None:
        running, self._running = self._running, None
        if running is not None and not running.done():
            running.set_result(None)

    def fail(self, exc: OSError) -> None:
        """Take the data dir offline after a failed fsync or write (logged once)."""
        if self.failure is not None:
            return
        self.failure = StorageOffline(exc.errno, f"data dir offline after: {exc}")
        log.error(
            "storage failure, data dir offline until restart (nothing unflushed is "
            "acknowledged; every request on it gets KAFKA_STORAGE_ERROR): %s",
            exc,
        )

    async def drain(self) -> None:
        """Wait for the rounds in progress (used at shutdown)."""
        while self._running is not None:
            await asyncio.shield(self._running)
