"""The aborted-transaction index of one partition.

Each entry (producer id, first offset, marker offset) tells read_committed consumers
which records of a fetched range to drop. Entries are appended as fixed 24-byte records
when an ABORT marker is written; recovery drops entries past the log end and the
partition replays the log tail to add any entry whose write did not reach the disk.
"""

from __future__ import annotations

import bisect
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from onceflow.broker.log import disk
from onceflow.broker.log.disk import write_fully

_ENTRY = struct.Struct(">qqq")


@dataclass(frozen=True, slots=True)
class AbortedTxn:
    producer_id: int
    first_offset: int
    #: Offset of the ABORT marker, unique per entry.
    last_offset: int


class AbortedIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.entries: list[AbortedTxn] = []
        self._last_offsets: list[int] = []

    def load(self, log_end_offset: int) -> None:
        """Read the file, keeping only entries whose marker is still in the log."""
        raw = os.pread(self.fd, os.fstat(self.fd).st_size, 0)
        whole = len(raw) - len(raw) % _ENTRY.size
        kept = [
            AbortedTxn(*fields)
            for fields in _ENTRY.iter_unpack(raw[:whole])
            if fields[2] < log_end_offset
        ]
        if whole != len(raw) or len(kept) * _ENTRY.size != whole:
            os.ftruncate(self.fd, 0)
            write_fully(self.fd, [b"".join(_ENTRY.pack(*_fields(e)) for e in kept)], 0)
        self.entries = sorted(kept, key=lambda e: e.last_offset)
        self._last_offsets = [e.last_offset for e in self.entries]

    def append(self, entry: AbortedTxn) -> None:
        write_fully(self.fd, [_ENTRY.pack(*_fields(entry))], len(self.entries) * _ENTRY.size)
        self.entries.append(entry)
        self._last_offsets.append(entry.last_offset)

    def contains(self, entry: AbortedTxn) -> bool:
        slot = bisect.bisect_left(self._last_offsets, entry.last_offset)
        return slot < len(self.entries) and self.entries[slot] == entry

    def overlapping(self, start: int, end: int) -> list[AbortedTxn]:
        """Aborted transactions with records in [start, end)."""
        slot = bisect.bisect_left(self._last_offsets, start)
        return [e for e in self.entries[slot:] if e.first_offset < end]

    def fsync(self) -> None:
        disk.fdatasync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def _fields(entry: AbortedTxn) -> tuple[int, int, int]:
    return entry.producer_id, entry.first_offset, entry.last_offset
