"""Log compaction: keep the latest record per key in a partition's closed segments.

``clean`` runs on a worker thread over segments that no append touches any more (all
below the last stable offset and the active segment), reading them through their open
file descriptors. It writes the cleaned segments, complete with their indexes, into
``<partition>/.cleaning/`` and fsyncs them; renaming that directory to ``.swap`` is the
commit point. ``install`` then moves each cleaned file over its original. Offsets never
change, so every mix of old and cleaned segments is a valid log: a crash before the
commit point leaves the old segments (``recover_leftovers`` drops ``.cleaning``), a crash
after it is finished by ``recover_leftovers`` on the next start.

What is kept:

- control batches (transaction markers), always: a read_committed consumer that was
  told of an aborted transaction waits for its marker, so removing markers would need
  the aborted index rewritten in step; they are one small batch per transaction;
- data of committed transactions and non-transactional data, latest record per key
  (records without a key are kept: there is nothing to compact them against);
- tombstones until ``delete.retention.ms`` past their batch's max timestamp;

and dropped: superseded records and the data of aborted transactions (read_committed
consumers never see it; the aborted index still lists it, which is harmless).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path

from onceflow.broker.log import disk
from onceflow.broker.log.aborted_index import AbortedTxn
from onceflow.broker.log.disk import fsync_directory
from onceflow.broker.log.segment import Segment
from onceflow.broker.records import (
    BatchHeader,
    InvalidBatch,
    Record,
    decode_records,
    read_header,
    rebuild_batch,
)

log = logging.getLogger(__name__)

CLEANING_DIR = ".cleaning"
SWAP_DIR = ".swap"


@dataclasses.dataclass(frozen=True, slots=True)
class CleanResult:
    """Cleaned copies of segments, committed in ``SWAP_DIR`` and ready to install."""

    bases: list[int]
    bytes_before: int
    bytes_after: int
    records_removed: int


def recover_leftovers(directory: Path) -> None:
    """Finish or undo a cleaner pass that a crash interrupted (called before the
    segments are opened)."""
    cleaning = directory / CLEANING_DIR
    if cleaning.exists():
        shutil.rmtree(cleaning)
    if (directory / SWAP_DIR).exists():
        log.warning("finishing an interrupted segment swap in %s", directory)
        install(directory)


def install(directory: Path) -> None:
    """Move committed cleaned segments over the originals, then drop ``SWAP_DIR``.

    Idempotent, so that recovery can repeat it after a crash at any step. The old index
    goes first: an old index beside a new log would point into the middle of batches,
    whereas a missing one is rebuilt from the log when the segment is opened.
    """
    swap = directory / SWAP_DIR
    for cleaned_log in sorted(swap.glob("*.log")):
        (directory / f"{cleaned_log.stem}.index").unlink(missing_ok=True)
        os.replace(cleaned_log, directory / cleaned_log.name)
    fsync_directory(directory)
    for cleaned_index in sorted(swap.glob("*.index")):
        if not (directory / f"{cleaned_index.stem}.index").exists():
            os.replace(cleaned_index, directory / cleaned_index.name)
    fsync_directory(directory)
    shutil.rmtree(swap)
    fsync_directory(directory)


def _aborted_lookup(aborted: list[AbortedTxn]) -> dict[int, list[tuple[int, int]]]:
    ranges: dict[int, list[tuple[int, int]]] = {}
    for entry in aborted:
        ranges.setdefault(entry.producer_id, []).append((entry.first_offset, entry.last_offset))
    return ranges


def _is_aborted(header: BatchHeader, ranges: dict[int, list[tuple[int, int]]]) -> bool:
    if not header.is_transactional or header.is_control:
        return False
    return any(
        first <= header.base_offset < marker for first, marker in ranges.get(header.producer_id, ())
    )


def _batches(segment: Segment) -> list[tuple[BatchHeader, bytes]]:
    data = segment.read(0, segment.size)
    result = []
    for position, header in segment.headers():
        result.append((header, data[position : position + header.size]))
    return result


def clean(
    directory: Path,
    segments: list[Segment],
    aborted: list[AbortedTxn],
    now_ms: int,
    delete_retention_ms: int,
    index_interval: int,
) -> CleanResult:
    """Compact ``segments`` (a prefix of the log, all below the last stable offset) into
    ``directory/SWAP_DIR``. Runs on a worker thread; touches no live file."""
    ranges = _aborted_lookup(aborted)
    latest: dict[bytes, int] = {}
    for segment in segments:
        for header, batch in _batches(segment):
            if header.is_control or _is_aborted(header, ranges):
                continue
            for record in _decoded(header, batch):
                if record.key is not None:
                    latest[record.key] = record.offset

    work = directory / CLEANING_DIR
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    before = after = removed = 0
    tombstone_horizon = now_ms - delete_retention_ms
    for segment in segments:
        cleaned = Segment(work, segment.base_offset, index_interval)
        try:
            for header, batch in _batches(segment):
                before += header.size
                if header.is_control:
                    kept_batch: bytes | None = batch
                elif _is_aborted(header, ranges):
                    kept_batch, removed = None, removed + header.record_count
                else:
                    records = _decoded(header, batch)
                    kept = [
                        r
                        for r in records
                        if r.key is None
                        or (
                            latest.get(r.key) == r.offset
                            and not (r.tombstone and header.max_timestamp < tombstone_horizon)
                        )
                    ]
                    removed += len(records) - len(kept)
                    if len(kept) == len(records):
                        kept_batch = batch
                    elif kept:
                        kept_batch = rebuild_batch(header, kept)
                    else:
                        kept_batch = None
                if kept_batch is not None:
                    cleaned.append([kept_batch], [read_header(kept_batch)])
                    after += len(kept_batch)
            cleaned.fsync()
            disk.fdatasync(cleaned.index_fd)
        finally:
            cleaned.close()
    fsync_directory(work)
    # The commit point: from here on, recovery installs these segments.
    os.replace(work, directory / SWAP_DIR)
    fsync_directory(directory)
    return CleanResult([s.base_offset for s in segments], before, after, removed)


def _decoded(header: BatchHeader, batch: bytes) -> list[Record]:
    try:
        return decode_records(batch, header)
    except InvalidBatch:
        # Produce checks only the CRC; undecodable records are kept verbatim rather
        # than guessed at (a key of None keeps every record of the batch).
        return [
            Record(header.base_offset + i, None, False, b"") for i in range(header.record_count)
        ]
