"""An append-only journal of JSON records for coordinator state.

Each line is ``<crc32c hex> <json>``; replay stops at the first line that is torn or
fails its checksum and truncates the file there, so a crash mid-write loses only the
record whose write had not been acknowledged. ``rewrite`` compacts the journal to the
live records by atomic replacement.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import google_crc32c

from onceflow.broker.log import disk
from onceflow.broker.log.disk import fsync_directory, write_fully


def _line(record: Any) -> bytes:
    payload = json.dumps(record, separators=(",", ":")).encode()
    return b"%08x %s\n" % (google_crc32c.value(payload), payload)


class Journal:
    """Durable record log; durability is requested through the broker's group flusher."""

    def __init__(self, path: Path, request_flush: Callable[[Journal], Awaitable[None] | None]):
        self.path = path
        self._request_flush = request_flush
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.size = 0
        self.records_written = 0
        self.unflushed: set[Journal] = set()

    def replay(self) -> list[Any]:
        """Every intact record in order; a torn tail is cut off."""
        raw = os.pread(self.fd, os.fstat(self.fd).st_size, 0)
        records = []
        position = 0
        for line in raw.splitlines(keepends=True):
            crc, _, payload = line.rstrip(b"\n").partition(b" ")
            if not line.endswith(b"\n") or crc != b"%08x" % google_crc32c.value(payload):
                break
            records.append(json.loads(payload))
            position += len(line)
        if position != len(raw):
            os.ftruncate(self.fd, position)
        self.size = position
        self.records_written = len(records)
        return records

    def append(self, record: Any, durable: bool = True) -> Awaitable[None] | None:
        """Write one record; the result, when not None, completes once it is durable.

        With ``durable=False`` nothing waits for it: the next durable append (or the
        next flush round) syncs it along with everything written before.
        """
        line = _line(record)
        write_fully(self.fd, [line], self.size)
        self.size += len(line)
        self.records_written += 1
        self.unflushed.add(self)
        return self._request_flush(self) if durable else None

    def rewrite(self, records: list[Any]) -> None:
        """Replace the journal by ``records`` (compaction), atomically and durably."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = b"".join(_line(r) for r in records)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_fully(fd, [data], 0)
            disk.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        fsync_directory(self.path.parent)
        # dup2 swaps the file behind our fd number atomically: a flush round's thread
        # syncing it meanwhile syncs the old or the new file, never a closed fd.
        os.dup2(fd_new := os.open(self.path, os.O_RDWR), self.fd)
        os.close(fd_new)
        self.size = len(data)
        self.records_written = len(records)
        self.unflushed.clear()

    # -- Flushable -------------------------------------------------------------

    def flush_targets(self) -> tuple[list[Journal], int]:
        targets = list(self.unflushed)
        self.unflushed.clear()
        return targets, self.size

    def mark_durable(self, offset: int) -> None:
        """Nothing becomes visible later for a journal: durability is all it needs."""

    def fsync(self) -> None:
        disk.fdatasync(self.fd)

    def close(self) -> None:
        os.close(self.fd)
