"""Durable producer id allocation: ids are never handed out twice, even across crashes.

Ids are reserved on disk a block at a time, and the next block is reserved (off the
event loop) when half of the current one is used, so an allocation almost never waits
for a write, and none blocks the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from onceflow.broker.log.atomic import read_json, write_json_off_loop

BLOCK_SIZE = 1000


class ProducerIdAllocator:
    def __init__(self, path: Path, fail: Callable[[OSError], object]) -> None:
        """``fail`` is told of a reservation that could not be written (it takes the
        data dir offline)."""
        self._path = path
        self._fail = fail
        stored = read_json(path)
        self._next = stored["reserved_until"] if stored else 0
        #: Ids below this are reserved on disk; below _reserved_until, asked to be.
        self._durable_until = self._next
        self._reserved_until = self._next
        self._reserving: asyncio.Future[None] | None = None

    def allocate(self) -> tuple[int, asyncio.Future[None] | None]:
        """A fresh producer id, and None if its reservation is on disk already, else a
        future that completes once it is (or fails with the OSError that kept it off
        disk): the id may be used in an answer only then."""
        producer_id = self._next
        self._next += 1
        if self._reserved_until - self._next < BLOCK_SIZE // 2:
            self._reserve(self._reserved_until + BLOCK_SIZE)
        if producer_id < self._durable_until:
            return producer_id, None
        # Reservations land in order: the latest one covers every id handed out.
        return producer_id, self._reserving

    def skip_past(self, producer_id: int) -> None:
        """Never hand out ``producer_id`` or any below it (ids found in use at start)."""
        if producer_id >= self._next:
            self._next = self._durable_until = self._reserved_until = producer_id + 1

    def _reserve(self, until: int) -> None:
        self._reserved_until = until
        written = write_json_off_loop(self._path, {"reserved_until": until})
        written.add_done_callback(lambda done: self._landed(done, until))
        self._reserving = written

    def _landed(self, written: asyncio.Future[None], until: int) -> None:
        failure = written.exception()
        if failure is None:
            self._durable_until = max(self._durable_until, until)
        elif isinstance(failure, OSError):
            self._fail(failure)
