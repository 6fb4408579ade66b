"""The durable store of committed consumer-group offsets.

One append-only journal per broker (``log/journal.py``): each record either sets
offsets of one group or deletes some of them. On start the journal is replayed (a
torn tail from a crash mid-write is cut off); once it has grown to twice its size
after the last rewrite, it is rewritten from memory with just the live offsets.

Durability follows the broker's flush policy through ``Broker.make_durable``: with
``--flush always`` a commit is answered only after its record is fsynced, and the
broker's group flusher covers concurrent commits (and produces) with one fsync
round. Readers that must not hand out a value a crash could take back await
``durable()`` before answering.

All methods run on the broker's event loop; only fsync leaves it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from onceflow.broker.log.journal import Journal

log = logging.getLogger(__name__)

OFFSETS_FILE = "group-offsets.journal"
DEFAULT_COMPACT_MIN_BYTES = 1024 * 1024

TopicPartition = tuple[str, int]
# Broker.make_durable: the flush policy applied to a journal.
MakeDurable = Callable[[Journal], Awaitable[None] | None]


@dataclasses.dataclass(frozen=True, slots=True)
class CommittedOffset:
    """What a group committed for one partition."""

    offset: int
    leader_epoch: int = -1
    metadata: str = ""
    #: Wall-clock milliseconds of the commit, for retention.
    commit_time_ms: int = 0


def now_ms() -> int:
    return int(time.time() * 1000)


class OffsetStore:
    """Committed offsets per group, durable on disk; see the module docstring."""

    def __init__(
        self,
        path: Path,
        make_durable: MakeDurable,
        *,
        compact_min_bytes: int = DEFAULT_COMPACT_MIN_BYTES,
        on_failure: Callable[[OSError], object] | None = None,
    ) -> None:
        """``on_failure`` is told of a compaction that could not be written."""
        self.compact_min_bytes = compact_min_bytes
        self.groups: dict[str, dict[TopicPartition, CommittedOffset]] = {}
        self._make_durable = make_durable
        # Flush rounds covering this journal that have not finished.
        self._in_flight = 0
        self._journal = Journal(path, self._flush, on_failure)
        for record in self._journal.replay():
            self._apply(record)
        self._base_size = self._journal.size

    @property
    def path(self) -> Path:
        return self._journal.path

    # -- reading -----------------------------------------------------------------

    def get(self, group: str) -> dict[TopicPartition, CommittedOffset]:
        return self.groups.get(group, {})

    def durable(self) -> Awaitable[None] | None:
        """Completes once everything written so far is on disk; None if it already is."""
        if not self._journal.unflushed and not self._in_flight:
            return None
        return self._flush(self._journal)

    # -- writing -----------------------------------------------------------------

    def commit(
        self, group: str, offsets: dict[TopicPartition, CommittedOffset]
    ) -> Awaitable[None] | None:
        """Store ``offsets`` for ``group``; an awaitable while the flush policy needs one.

        The new values are visible to ``get`` at once, so a later request on the same
        connection reads them; readers that answer clients await ``durable()`` first.
        """
        if not offsets:
            return None
        self.groups.setdefault(group, {}).update(offsets)
        waiter = self._journal.append({"g": group, "c": _entries(offsets)})
        self._maybe_compact()
        return waiter

    def delete(self, group: str, partitions: Iterable[TopicPartition]) -> None:
        """Forget some offsets of a group; durable with the next flush round.

        Deletions are housekeeping (retention, deleted topics): nobody waits for them,
        and losing one in a crash only means the next sweep does it again.
        """
        stored = self.groups.get(group)
        if stored is None:
            return
        doomed = [tp for tp in partitions if tp in stored]
        if not doomed:
            return
        for tp in doomed:
            del stored[tp]
        if not stored:
            del self.groups[group]
        waiter = self._journal.append({"g": group, "d": [list(tp) for tp in doomed]})
        if isinstance(waiter, asyncio.Future):
            waiter.add_done_callback(_ignore_result)
        self._maybe_compact()

    def _apply(self, record: dict[str, Any]) -> None:
        group = record["g"]
        if "c" in record:
            stored = self.groups.setdefault(group, {})
            for topic, partition, offset, epoch, metadata, at in record["c"]:
                stored[(topic, partition)] = CommittedOffset(offset, epoch, metadata, at)
            return
        stored = self.groups.get(group, {})
        for topic, partition in record["d"]:
            stored.pop((topic, partition), None)
        if not stored:
            self.groups.pop(group, None)

    # -- flushing and compaction -----------------------------------------------------

    def _flush(self, journal: Journal) -> Awaitable[None] | None:
        waiter = self._make_durable(journal)
        if waiter is None:
            return None
        future = asyncio.ensure_future(waiter)
        self._in_flight += 1
        future.add_done_callback(self._flushed)
        return future

    def _flushed(self, flushed: asyncio.Future[None]) -> None:
        self._in_flight -= 1
        # After a failed flush the data dir is offline: nothing more is written.
        if flushed.cancelled() or flushed.exception() is None:
            self._maybe_compact()

    def _maybe_compact(self) -> None:
        if self._journal.rewriting is None and self._journal.size > max(
            self.compact_min_bytes, 2 * self._base_size
        ):
            self.compact()

    @property
    def compacting(self) -> asyncio.Task[None] | None:
        """The compaction in progress, if any."""
        return self._journal.rewriting

    def compact(self) -> None:
        """Start rewriting the journal with just the live offsets, off the loop (see
        ``Journal.rewrite_off_loop``); commits go on meanwhile."""
        started = self._journal.rewrite_off_loop(
            [{"g": group, "c": _entries(offsets)} for group, offsets in self.groups.items()]
        )
        if started is not None:
            started.add_done_callback(self._compacted)

    def _compacted(self, _: asyncio.Task[None]) -> None:
        self._base_size = self._journal.size
        log.info("rewrote %s: %d groups, %d bytes", self.path, len(self.groups), self._base_size)

    def close(self, durably: bool = True) -> None:
        if durably:
            self._journal.fsync()
        self._journal.close()


def _entries(offsets: dict[TopicPartition, CommittedOffset]) -> list[list[Any]]:
    return [
        [topic, partition, o.offset, o.leader_epoch, o.metadata, o.commit_time_ms]
        for (topic, partition), o in offsets.items()
    ]


def _ignore_result(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
