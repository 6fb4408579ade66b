"""The log of one partition: its segments, offsets, high watermark and producer state."""

from __future__ import annotations

import bisect
import dataclasses
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

from kio.schema.errors import ErrorCode

from onceflow.broker.log import cleaner, disk
from onceflow.broker.log.aborted_index import AbortedIndex, AbortedTxn
from onceflow.broker.log.atomic import read_json, write_json_atomically, write_json_off_loop
from onceflow.broker.log.segment import Segment
from onceflow.broker.producers import Duplicate, ProducerStates
from onceflow.broker.records import (
    CONTROL_ABORT,
    HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    InvalidBatch,
    build_control_batch,
    control_type,
    decode_records,
    first_record_at_or_after,
    read_header,
    split_produced,
    stamp_log_append_time,
)

log = logging.getLogger(__name__)

_PATCHED_PREFIX = struct.Struct(">qii")
SNAPSHOT_FILE = "producers.snapshot"
# Snapshots taken at a roll are written (fsync, rename, directory fsync) off the event
# loop, one at a time so that an older one never replaces a newer one.
_SNAPSHOT_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onceflow-snapshot")
LOG_START_FILE = "log-start-offset"


@dataclasses.dataclass(frozen=True, slots=True)
class LogConfig:
    segment_bytes: int = 128 * 1024 * 1024
    index_interval_bytes: int = 4096
    #: Roll the active segment once it is this old (topic config segment.ms).
    segment_ms: int = 2**63 - 1
    #: Largest batch a producer may append (topic config max.message.bytes).
    max_message_bytes: int = 1_048_588
    #: Stamp batches with the broker's clock (message.timestamp.type=LogAppendTime).
    log_append_time: bool = False
    #: cleanup.policy includes compact: every record needs a key.
    compact: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class AppendResult:
    base_offset: int
    last_offset: int
    duplicate: bool
    #: The broker's timestamp when the topic uses LogAppendTime, else -1.
    log_append_time: int = -1


class PartitionLog:
    """Append, read and recover one partition's segments.

    Offsets become visible to consumers at the high watermark, which the owner moves
    with ``mark_durable`` once appended data is as safe as the flush policy asks.
    """

    def __init__(
        self,
        directory: Path,
        config: LogConfig,
        on_visible: Callable[[PartitionLog], None] = lambda partition: None,
    ) -> None:
        self.directory = directory
        self.config = config
        self._on_visible = on_visible
        if not directory.exists():
            directory.mkdir(parents=True)
            disk.fsync_directory(directory.parent)
        self.segments: list[Segment] = []
        self._bases: list[int] = []
        self.producers = ProducerStates()
        #: producer id -> first offset of its open transaction on this partition.
        self.ongoing: dict[int, int] = {}
        #: (marker offset, first offset) of transactions ended here whose marker is
        #: not durable yet: read_committed must not pass them before it is.
        self._ending: list[tuple[int, int]] = []
        self.aborted = AbortedIndex(directory / "aborted.index")
        self.high_watermark = 0
        #: Files written since the last fsync round (segments, the aborted index).
        self.unflushed: set[Segment | AbortedIndex] = set()
        self._read_hint: tuple[int, Segment, int] | None = None
        #: Raised by DeleteRecords past the first segment's base (durable checkpoint).
        self._log_start = 0
        self._active_since = time.monotonic()
        #: The producer snapshot of the last roll, being written off the loop.
        self._snapshot_write: Future[None] | None = None
        self._snapshot_failure: BaseException | None = None
        #: Set while the cleaner works on this partition: retention leaves it alone.
        self.cleaning = False
        #: Offsets below this were compacted by the last cleaner pass.
        self.cleaned_upto = 0
        self._open()

    # -- offsets ---------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        return max(self._log_start, self.segments[0].base_offset)

    @property
    def log_end_offset(self) -> int:
        return self.segments[-1].next_offset

    @property
    def last_stable_offset(self) -> int:
        """Where read_committed consumers stop: the first offset of the earliest open
        transaction, or the high watermark when none is open."""
        if not self.ongoing and not self._ending:
            return self.high_watermark
        return min(
            self.high_watermark,
            *self.ongoing.values(),
            *(first for _, first in self._ending),
        )

    @property
    def active(self) -> Segment:
        return self.segments[-1]

    # -- recovery --------------------------------------------------------------

    def _open(self) -> None:
        cleaner.recover_leftovers(self.directory)
        stored_start = read_json(self.directory / LOG_START_FILE)
        self._log_start = stored_start["offset"] if stored_start else 0
        bases = sorted(int(p.stem) for p in self.directory.glob("*.log") if p.stem.isdigit())
        if not bases:
            self._add_segment(0)
            self.high_watermark = 0
            return
        for base in bases:
            self._add_segment(base)
        for segment in self.segments[:-1]:
            if not segment.load_index():
                log.warning("rebuilding index of %s", segment.log_path)
                segment.recover(validate_crc=False)
        tail = self.active
        truncated = tail.recover(validate_crc=True)
        if truncated:
            log.warning("truncated %d torn bytes from %s", truncated, tail.log_path)
        if tail.size == 0 and len(self.segments) > 1:
            # An empty tail starts where the segment before it ended.
            tail.next_offset = max(tail.base_offset, self.segments[-2].next_offset)
        self.high_watermark = self.log_end_offset
        # A checkpoint past a log end lost with unflushed data (flush=never) would make
        # every offset unreadable.
        self._log_start = min(self._log_start, self.log_end_offset)
        self.aborted.load(self.log_end_offset)
        self._rebuild_producer_state()

    def _add_segment(self, base_offset: int) -> Segment:
        segment = Segment(self.directory, base_offset, self.config.index_interval_bytes)
        self.segments.append(segment)
        self._bases.append(base_offset)
        return segment

    def _rebuild_producer_state(self) -> None:
        """Load the last snapshot and replay the batch headers appended after it:
        producer sequences, open transactions and aborted transactions."""
        snapshot = read_json(self.directory / SNAPSHOT_FILE)
        start = 0
        if snapshot is not None and snapshot["offset"] <= self.log_end_offset:
            self.producers = ProducerStates.from_json(snapshot["producers"])
            self.ongoing = {int(pid): first for pid, first in snapshot["ongoing"].items()}
            start = snapshot["offset"]
        first = max(0, bisect.bisect_right(self._bases, start) - 1)
        for segment in self.segments[first:]:
            position = segment.locate(start) if segment.base_offset <= start else 0
            if position is None:
                continue
            for batch_position, header in segment.headers(position):
                if header.base_offset < start:
                    continue
                if header.is_control:
                    marker = control_type(segment.read(batch_position, header.size), header)
                    self._apply_marker(header, marker == CONTROL_ABORT, recovering=True)
                else:
                    self._apply_data(header)

    def _producer_snapshot(self) -> dict[str, object]:
        return {
            "offset": self.log_end_offset,
            "producers": self.producers.to_json(),
            "ongoing": {str(pid): first for pid, first in self.ongoing.items()},
        }

    def write_producer_snapshot(self) -> None:
        # An older snapshot still being written must not land after this one.
        self._settle_snapshot_write()
        write_json_atomically(self.directory / SNAPSHOT_FILE, self._producer_snapshot())

    def _snapshot_written(self, write: Future[None]) -> None:
        # In the writer's thread: the loop sees the failure at its next roll.
        if write.exception() is not None:
            self._snapshot_failure = write.exception()

    def _settle_snapshot_write(self) -> None:
        """Wait for the roll's snapshot write, however it ends."""
        if self._snapshot_write is not None:
            wait([self._snapshot_write])
            self._snapshot_write = None

    def _apply_data(self, header: BatchHeader) -> None:
        if header.is_idempotent:
            self.producers.record(header)
        if header.is_transactional:
            self.ongoing.setdefault(header.producer_id, header.base_offset)

    def _apply_marker(self, header: BatchHeader, abort: bool, recovering: bool = False) -> None:
        self.producers.bump_epoch(header.producer_id, header.producer_epoch)
        first = self.ongoing.pop(header.producer_id, None)
        if first is not None and not recovering and header.base_offset >= self.high_watermark:
            self._ending.append((header.base_offset, first))
        if abort and first is not None:
            entry = AbortedTxn(header.producer_id, first, header.base_offset)
            if not (recovering and self.aborted.contains(entry)):
                self.aborted.append(entry)
                self.unflushed.add(self.aborted)

    # -- appending -------------------------------------------------------------

    def append(self, records: bytes) -> AppendResult:
        """Validate, deduplicate and append one produced batch; return where it landed.

        Raises InvalidBatch with the Kafka error code for anything that must be refused.
        """
        batches = split_produced(records)
        if len(batches) != 1:
            raise InvalidBatch(
                ErrorCode.invalid_record,
                "produce requests v3+ carry exactly one record batch per partition",
            )
        _, header = batches[0]
        if header.size > self.config.max_message_bytes:
            raise InvalidBatch(
                ErrorCode.message_too_large,
                f"batch of {header.size} bytes exceeds max.message.bytes "
                f"{self.config.max_message_bytes}",
            )
        if self.config.compact:
            _require_keys(records, header, self.directory.name)
        if header.is_idempotent:
            try:
                self.producers.check(header)
            except Duplicate as dup:
                return AppendResult(dup.batch.base_offset, dup.batch.last_offset, True)
        append_time = -1
        if self.config.log_append_time:
            append_time = int(time.time() * 1000)
            records = stamp_log_append_time(records, append_time)
            header = read_header(records)
        header = self._write(records, header)
        self._apply_data(header)
        return AppendResult(header.base_offset, header.last_offset, False, append_time)

    def append_marker(
        self, producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int
    ) -> int | None:
        """End this partition's part of a transaction; returns the marker's offset, or None
        when the producer has no open transaction here (nothing to end)."""
        if producer_id not in self.ongoing:
            self.producers.bump_epoch(producer_id, producer_epoch)
            return None
        batch = build_control_batch(
            producer_id, producer_epoch, commit, coordinator_epoch, int(time.time() * 1000)
        )
        header = self._write(batch, read_header(batch))
        self._apply_marker(header, abort=not commit)
        return header.base_offset

    def _write(self, batch: bytes, header: BatchHeader) -> BatchHeader:
        """Assign the next offsets to one validated batch and write it; returns its header."""
        if self.active.size and (
            self.active.size + header.size > self.config.segment_bytes
            or (time.monotonic() - self._active_since) * 1000 >= self.config.segment_ms
        ):
            self.roll()
        base = self.log_end_offset
        header = dataclasses.replace(header, base_offset=base)
        prefix = _PATCHED_PREFIX.pack(base, header.length, 0)
        segment = self.active
        segment.append([prefix, memoryview(batch)[LOG_OVERHEAD + 4 :]], [header])
        self.unflushed.add(segment)
        return header

    def roll(self) -> None:
        """Close the active segment and start a new one at the log end.

        The producer snapshot (what recovery replays from) is written in the
        background: until it lands, recovery replays from the previous one, which
        covers the same state from further back. A failed write surfaces at the next
        roll (an OSError, which takes the data dir offline like a failed append)."""
        if self._snapshot_failure is not None:
            raise self._snapshot_failure
        self._snapshot_write = _SNAPSHOT_WRITER.submit(
            write_json_atomically, self.directory / SNAPSHOT_FILE, self._producer_snapshot()
        )
        self._snapshot_write.add_done_callback(self._snapshot_written)
        self._add_segment(self.log_end_offset)
        self._active_since = time.monotonic()

    def active_age_ms(self) -> float:
        return (time.monotonic() - self._active_since) * 1000

    # -- retention and cleaning (driven by log/retention.py) -------------------

    def advance_log_start(self, offset: int) -> Awaitable[None] | None:
        """DeleteRecords: make ``offset`` the first readable offset now; the awaitable
        (None: nothing to change) completes once that is durable, written off the loop.
        A crash before then brings back records that no answer said were deleted."""
        if offset <= self.log_start_offset:
            return None
        self._log_start = offset
        return write_json_off_loop(self.directory / LOG_START_FILE, {"offset": offset})

    def detach_oldest(self, count: int) -> list[Segment]:
        """Remove the ``count`` oldest segments (never the active one) from the log and
        return them; the caller deletes their files once no flush round uses them."""
        count = min(count, len(self.segments) - 1)
        doomed = self.segments[:count]
        del self.segments[:count]
        del self._bases[:count]
        for segment in doomed:
            self.unflushed.discard(segment)
        self._read_hint = None
        return doomed

    def replace_segments(self, fresh: dict[int, Segment]) -> list[Segment]:
        """Swap cleaned segments in by base offset; returns the replaced ones."""
        old = []
        for slot, segment in enumerate(self.segments):
            if segment.base_offset in fresh:
                old.append(segment)
                self.segments[slot] = fresh[segment.base_offset]
        self._read_hint = None
        return old

    def mark_durable(self, offset: int) -> None:
        """Make everything below ``offset`` visible to consumers."""
        if offset > self.high_watermark:
            self.high_watermark = offset
            if self._ending:
                self._ending = [(end, first) for end, first in self._ending if end >= offset]
            self._on_visible(self)

    # -- reading ---------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, upper: int) -> bytes:
        """Whole batches from the one containing ``offset``, below offset ``upper``.

        At most ``max_bytes``, except that the first batch is returned whole however
        large it is, so a consumer always makes progress (KIP-74).
        """
        if offset >= upper:
            return b""
        found = self._find(offset)
        if found is None:
            return b""
        segment, position = found
        chunk = segment.read(position, max(max_bytes, HEADER_SIZE))
        end = 0
        last = -1
        while end + HEADER_SIZE <= len(chunk):
            base, length, _ = _PATCHED_PREFIX.unpack_from(chunk, end)
            if base >= upper:
                break
            size = length + LOG_OVERHEAD
            if end + size > len(chunk):
                if end == 0:
                    chunk = segment.read(position, size)
                    last, end = 0, size
                break
            last, end = end, end + size
        if last < 0:
            return b""
        last_header = read_header(chunk, last)
        self._read_hint = (last_header.last_offset + 1, segment, position + end)
        return chunk[:end]

    def fetchable(self, offset: int, upper: int) -> tuple[int, bool]:
        """What ``read`` from ``offset`` below ``upper`` (a batch boundary: the high
        watermark or the LSO) returns when no byte limit cuts it short: its size, and
        whether it stops at the end of a segment short of ``upper``. A read stays in one
        segment, so then waiting cannot make it bigger. Lets a parked fetch judge its
        min_bytes without building an answer."""
        if offset >= upper:
            return 0, False
        start = self._find(offset)
        if start is None:
            return 0, False
        first, first_position = start
        end = self._find(upper)
        last, last_position = end if end is not None else (self.active, self.active.size)
        if first is last:
            return last_position - first_position, False
        return first.size - first_position, True

    def _find(self, offset: int) -> tuple[Segment, int] | None:
        hint = self._read_hint
        if hint is not None and hint[0] == offset and hint[2] < hint[1].size:
            return hint[1], hint[2]
        slot = max(0, bisect.bisect_right(self._bases, offset) - 1)
        for segment in self.segments[slot:]:
            position = segment.locate(max(offset, segment.base_offset))
            if position is not None:
                return segment, position
        return None

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after ``timestamp``."""
        for segment in self.segments:
            if segment.max_timestamp < timestamp or segment.next_offset <= self.log_start_offset:
                continue
            header = segment.locate_timestamp(timestamp)
            if header is None or header.base_offset >= self.high_watermark:
                return None
            position = segment.locate(header.base_offset)
            assert position is not None
            batch = segment.read(position, header.size)
            found = first_record_at_or_after(batch, header, timestamp)
            if found is not None and found[0] < self.log_start_offset:
                # DeleteRecords cut into this batch: its first readable offset.
                return self.log_start_offset, found[1]
            return found
        return None

    def max_timestamp_offset(self) -> tuple[int, int] | None:
        """(offset, timestamp) of the record with the largest timestamp (ListOffsets -3).

        From each segment's maximum and its time index: a scan of one index interval per
        segment, not of every batch header."""
        best: BatchHeader | None = None
        for segment in self.segments:
            if segment.base_offset >= self.high_watermark:
                break
            header = segment.locate_timestamp(segment.max_timestamp)
            if header is not None and header.base_offset >= self.high_watermark:
                # The segment's maximum is not visible yet (rare: the active segment).
                header = _max_batch_below(segment, self.high_watermark)
            if header is not None and (best is None or header.max_timestamp > best.max_timestamp):
                best = header
        if best is None:
            return None
        position = self._find(best.base_offset)
        assert position is not None
        batch = position[0].read(position[1], best.size)
        return first_record_at_or_after(batch, best, best.max_timestamp)

    # -- lifecycle -------------------------------------------------------------

    def flush_targets(self) -> tuple[list[Segment | AbortedIndex], int]:
        """Files to fsync and the log end they cover; clears the dirty set."""
        segments = list(self.unflushed)
        self.unflushed.clear()
        return segments, self.log_end_offset

    def discard(self) -> None:
        """Close every file without writing anything (the partition is being deleted)."""
        self._settle_snapshot_write()  # the partition's files are going away
        for segment in self.segments:
            segment.close()
        self.aborted.close()

    def close(self) -> None:
        for segment in self.segments:
            segment.fsync()
        self.aborted.fsync()
        self.write_producer_snapshot()
        for segment in self.segments:
            segment.close()
        self.aborted.close()


def _require_keys(records: bytes, header: BatchHeader, partition: str) -> None:
    """As Kafka: a compacted topic refuses a batch holding a record without a key."""
    for index, record in enumerate(decode_records(records, header)):
        if record.key is None:
            raise InvalidBatch(
                ErrorCode.invalid_record,
                f"Compacted topic cannot accept message without key in topic partition {partition}",
                record_index=index,
            )


def _max_batch_below(segment: Segment, upper: int) -> BatchHeader | None:
    """The first batch of ``segment`` below offset ``upper`` with the largest timestamp."""
    best: BatchHeader | None = None
    for _, header in segment.headers():
        if header.base_offset >= upper:
            break
        if best is None or header.max_timestamp > best.max_timestamp:
            best = header
    return best
