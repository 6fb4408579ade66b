"""Background log maintenance: retention, segment.ms on quiet logs, and compaction.

One task on the broker's event loop looks at every partition a few times a second. The
decisions (which segments go, which are cleanable) are made on the loop, where the log
is owned; the slow parts (unlinking files, the cleaner pass, installing its output) run
on worker threads. Segment files are closed only after the group flusher has drained,
so no fsync round ever touches a closed descriptor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from onceflow.broker.log import cleaner
from onceflow.broker.log.disk import fsync_directory
from onceflow.broker.log.partition import PartitionLog
from onceflow.broker.log.segment import Segment
from onceflow.broker.topic_config import EffectiveConfig

log = logging.getLogger(__name__)

#: After a failed cleaner pass, the partition is left alone this long.
CLEAN_RETRY_SECONDS = 30.0


def _now_ms() -> int:
    return int(time.time() * 1000)


def expired_count(partition: PartitionLog, config: EffectiveConfig, now_ms: int) -> int:
    """How many of the oldest closed segments retention (or DeleteRecords) removes.

    Only whole segments below the high watermark go; deletion stops at the first
    segment that must stay, so the log never gets a hole.
    """
    closed = partition.segments[:-1]
    total = sum(s.size for s in partition.segments)
    count = 0
    for segment in closed:
        if segment.next_offset > partition.high_watermark:
            break
        below_start = segment.next_offset <= partition.log_start_offset
        by_time = (
            config.delete
            and config.retention_ms >= 0
            and segment.max_timestamp < now_ms - config.retention_ms
        )
        by_size = (
            config.delete
            and config.retention_bytes >= 0
            and total - segment.size >= config.retention_bytes
        )
        if not (below_start or by_time or by_size):
            break
        total -= segment.size
        count += 1
    return count


def _cleanable(partition: PartitionLog, config: EffectiveConfig, now_ms: int) -> list[Segment]:
    """The closed segments the cleaner may rewrite, or [] when it is not worth it yet.

    Everything at or past the last stable offset may still belong to an open
    transaction, so the cleanable prefix ends below it (and below the active segment).
    """
    limit = min(
        partition.last_stable_offset, partition.high_watermark, partition.active.base_offset
    )
    lag_horizon = now_ms - config.min_compaction_lag_ms
    segments = []
    for segment in partition.segments[:-1]:
        if segment.next_offset > limit or segment.max_timestamp > lag_horizon:
            break
        segments.append(segment)
    total = sum(s.size for s in segments)
    dirty = sum(s.size for s in segments if s.base_offset >= partition.cleaned_upto)
    if not dirty or dirty < total * config.min_cleanable_dirty_ratio:
        return []
    return segments


class LogMaintenance:
    """Runs retention and the cleaner for every topic of a broker."""

    def __init__(self, broker: Any) -> None:
        self._broker = broker
        self._task: asyncio.Task[None] | None = None
        self._cleaning: dict[PartitionLog, asyncio.Task[None]] = {}
        self._deleting: set[asyncio.Task[None]] = set()
        self._retry_after: dict[PartitionLog, float] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever())

    async def stop(self) -> None:
        """Stop checking and wait for background work in progress."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.gather(*self._cleaning.values(), *self._deleting, return_exceptions=True)

    async def quiesce(self, partitions: Iterable[PartitionLog]) -> None:
        """Wait until no cleaner pass works on ``partitions`` (before closing them)."""
        busy = [self._cleaning[p] for p in partitions if p in self._cleaning]
        await asyncio.gather(*busy, return_exceptions=True)

    async def _run_forever(self) -> None:
        config = self._broker.config
        retention_every = config.log_retention_check_interval_ms / 1000
        clean_every = config.log_cleaner_backoff_ms / 1000
        loop = asyncio.get_running_loop()
        next_retention = loop.time() + retention_every
        next_clean = loop.time() + clean_every
        while True:
            await asyncio.sleep(max(0.0, min(next_retention, next_clean) - loop.time()))
            try:
                if loop.time() >= next_retention:
                    next_retention = loop.time() + retention_every
                    self.apply_retention()
                if loop.time() >= next_clean:
                    next_clean = loop.time() + clean_every
                    self.start_cleaning()
            except Exception:
                log.exception("log maintenance failed")

    def _partitions(self) -> list[tuple[EffectiveConfig, PartitionLog]]:
        return [
            (topic.effective, partition)
            for topic in list(self._broker.topics.topics.values())
            if not topic.deleting
            for partition in topic.partitions
            if not partition.cleaning
        ]

    def apply_retention(self) -> None:
        """One retention round (cheap: only segment metadata is read)."""
        now_ms = _now_ms()
        for config, partition in self._partitions():
            self._roll_if_expired(partition, config, now_ms)
            count = expired_count(partition, config, now_ms)
            if count:
                doomed = partition.detach_oldest(count)
                log.info(
                    "retention removed %d segment(s) of %s; log start now %d",
                    len(doomed), partition.directory.name, partition.log_start_offset,
                )  # fmt: skip
                self._delete_later(doomed, partition.directory)

    def start_cleaning(self) -> None:
        """Start one cleaner pass on the first compacted partition that needs one (one
        pass at a time, so cleaning never takes more than one worker thread)."""
        if self._cleaning:
            return
        now_ms = _now_ms()
        for config, partition in self._partitions():
            if not config.compact or not self._may_clean(partition):
                continue
            segments = _cleanable(partition, config, now_ms)
            if segments:
                partition.cleaning = True
                self._cleaning[partition] = asyncio.create_task(
                    self._clean(partition, segments, config, now_ms)
                )
                return

    def _may_clean(self, partition: PartitionLog) -> bool:
        retry = self._retry_after.get(partition)
        return retry is None or time.monotonic() >= retry

    @staticmethod
    def _roll_if_expired(partition: PartitionLog, config: EffectiveConfig, now_ms: int) -> None:
        """Close an active segment that segment.ms or time retention says is done, so
        that a quiet log is still rolled and expired data still goes."""
        active = partition.active
        if not active.size or active.next_offset > partition.high_watermark:
            return
        expired = (
            config.delete
            and config.retention_ms >= 0
            and active.max_timestamp < now_ms - config.retention_ms
        )
        if expired or partition.active_age_ms() >= config.segment_ms:
            partition.roll()

    def _delete_later(self, segments: list[Segment], directory: Path) -> None:
        task = asyncio.create_task(self._delete(segments, directory))
        self._deleting.add(task)
        task.add_done_callback(self._deleting.discard)

    async def _delete(self, segments: list[Segment], directory: Path) -> None:
        await self._broker.flusher.drain()
        await asyncio.to_thread(_delete_files, segments, directory)

    async def _clean(
        self, partition: PartitionLog, segments: list[Segment], config: EffectiveConfig, now_ms: int
    ) -> None:
        try:
            result = await asyncio.to_thread(
                cleaner.clean,
                partition.directory,
                segments,
                list(partition.aborted.entries),
                now_ms,
                config.delete_retention_ms,
                partition.config.index_interval_bytes,
            )
            # The old descriptors stay readable while the files are replaced: they
            # hold the same offsets, so fetches served meanwhile are still right.
            await asyncio.to_thread(cleaner.install, partition.directory)
            fresh = {}
            for base in result.bases:
                segment = Segment(partition.directory, base, partition.config.index_interval_bytes)
                if not segment.load_index():
                    segment.recover(validate_crc=False)
                fresh[base] = segment
            old = partition.replace_segments(fresh)
            partition.cleaned_upto = segments[-1].next_offset
            log.info(
                "cleaned %s: %d -> %d bytes, %d records removed",
                partition.directory.name, result.bytes_before, result.bytes_after,
                result.records_removed,
            )  # fmt: skip
            await self._broker.flusher.drain()
            for segment in old:
                segment.close()
        except Exception:
            log.exception("cleaning %s failed; its segments are unchanged", partition.directory)
            self._retry_after[partition] = time.monotonic() + CLEAN_RETRY_SECONDS
        finally:
            partition.cleaning = False
            self._cleaning.pop(partition, None)


def _delete_files(segments: list[Segment], directory: Path) -> None:
    # Oldest first: a crash part-way leaves a shorter log, never one with a hole.
    for segment in segments:
        segment.delete()
    # The partition may have been deleted meanwhile; its directory went with it.
    with contextlib.suppress(FileNotFoundError):
        fsync_directory(directory)


def remove_directories(directories: list[Path]) -> None:
    """Delete the directories of deleted partitions (on a worker thread)."""
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)
        if directory.parent.exists():
            fsync_directory(directory.parent)
