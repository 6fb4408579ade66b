"""An append-only journal of JSON records for coordinator state.

Each line is ``<crc32c hex> <json>``; replay stops at the first line that is torn or
fails its checksum and truncates the file there, so a crash mid-write loses only the
record whose write had not been acknowledged. ``rewrite`` compacts the journal to the
live records by atomic replacement; ``rewrite_off_loop`` does the same while the
broker serves, with every write and sync of the new file on a worker thread.

While such a rewrite runs, appends go on to the old file as usual and are copied into
the new one: first buffered, until the snapshot of live records is on disk, then
written to both files, and flush rounds sync both, so that whichever file a crash
leaves under the journal's name holds everything acknowledged. The new file replaces
the old one (rename, directory sync) off the loop too; only then does the journal's
fd move to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import google_crc32c

from onceflow.broker.log import disk
from onceflow.broker.log.disk import fsync_directory, write_fully

log = logging.getLogger(__name__)
_REWRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onceflow-journal")


def _line(record: Any) -> bytes:
    payload = json.dumps(record, separators=(",", ":")).encode()
    return b"%08x %s\n" % (google_crc32c.value(payload), payload)


class _NewFile:
    """The file a rewrite in progress writes: the snapshot, then what is appended."""

    __slots__ = ("backlog", "fd", "records", "size")

    def __init__(self, fd: int, size: int, records: int) -> None:
        self.fd = fd
        self.size = size
        self.records = records
        #: Lines appended before the snapshot is on disk; None once they are written
        #: to this file as they come.
        self.backlog: list[bytes] | None = []

    def add(self, line: bytes) -> None:
        self.records += 1
        if self.backlog is not None:
            self.backlog.append(line)
            return
        write_fully(self.fd, [line], self.size)
        self.size += len(line)

    def write_backlog(self) -> None:
        assert self.backlog is not None
        # One buffer: pwritev refuses more than IOV_MAX (1024) of them.
        data, self.backlog = b"".join(self.backlog), None
        write_fully(self.fd, [data], self.size)
        self.size += len(data)


def _write_and_sync(fd: int, data: bytes) -> None:
    write_fully(fd, [data], 0)
    disk.fsync(fd)


def _sync_and_install(fd: int, tmp: Path, path: Path) -> None:
    disk.fdatasync(fd)
    os.replace(tmp, path)
    fsync_directory(path.parent)


class Journal:
    """Durable record log; durability is requested through the broker's group flusher."""

    def __init__(
        self,
        path: Path,
        request_flush: Callable[[Journal], Awaitable[None] | None],
        on_failure: Callable[[OSError], object] | None = None,
    ):
        """``on_failure`` is told of a write or sync of ``rewrite_off_loop`` that failed
        (it takes the data dir offline); without it, the failure is logged."""
        self.path = path
        self._request_flush = request_flush
        self._on_failure = on_failure
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.size = 0
        self.records_written = 0
        self.unflushed: set[Journal] = set()
        self._new: _NewFile | None = None
        #: The new file's fd while appends are written to both files (flush rounds sync
        #: it too), and fds of rewrites ended, to close.
        self._also_sync: int | None = None
        self._retired: list[int] = []
        self._sync_lock = threading.Lock()
        self._step: concurrent.futures.Future[None] | None = None
        self.rewriting: asyncio.Task[None] | None = None

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
        if self._new is not None:
            self._new.add(line)
        self.unflushed.add(self)
        return self._request_flush(self) if durable else None

    def rewrite_off_loop(self, records: list[Any]) -> asyncio.Task[None] | None:
        """Start replacing the journal by ``records`` (the live state now) and what is
        appended from now on; the task ends once the journal is the new file (or the
        rewrite failed, which ``on_failure`` is told). None if one is running already."""
        if self.rewriting is not None:
            return None
        data = b"".join(_line(r) for r in records)
        fd = os.open(self._tmp_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self._new = _NewFile(fd, len(data), len(records))
        self.rewriting = asyncio.ensure_future(self._rewrite_off_loop(self._new, data))
        return self.rewriting

    async def _rewrite_off_loop(self, new: _NewFile, data: bytes) -> None:
        try:
            await self._off_loop(_write_and_sync, new.fd, data)
            if self._new is not new:
                return  # abandoned: the journal is closing or rewritten at once
            new.write_backlog()
            self._also_sync = new.fd
            await self._off_loop(_sync_and_install, new.fd, self._tmp_path, self.path)
            if self._new is not new:
                return
            # Atomically: a flush round syncing the journal's fd meanwhile syncs the
            # old file or the new one, and the new one holds everything either way.
            os.dup2(new.fd, self.fd)
            self.size, self.records_written = new.size, new.records
        except OSError as exc:
            if self._on_failure is None:
                log.error("rewriting %s failed: %s", self.path, exc)
            else:
                self._on_failure(exc)
        finally:
            if self._new is new:
                self._new = self._also_sync = None
                self._retired.append(new.fd)
                self._close_retired()
            self.rewriting = None

    async def _off_loop(self, call: Callable[..., None], *args: Any) -> None:
        self._step = _REWRITER.submit(call, *args)
        await asyncio.wrap_future(self._step)

    def _abandon_rewrite(self) -> None:
        """Stop a rewrite in progress (waiting for its current step): the old file
        stays the journal, or the new one if it had replaced it already; both hold
        everything appended."""
        if self._step is not None:
            concurrent.futures.wait([self._step])
        if self._new is not None:
            self._retired.append(self._new.fd)
            self._new = self._also_sync = None

    @property
    def _tmp_path(self) -> Path:
        return self.path.with_name(self.path.name + ".tmp")

    def rewrite(self, records: list[Any]) -> None:
        """Replace the journal by ``records`` (compaction), atomically and durably, on
        the loop (at shutdown)."""
        self._abandon_rewrite()
        data = b"".join(_line(r) for r in records)
        fd = os.open(self._tmp_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_and_sync(fd, data)
            _sync_and_install(fd, self._tmp_path, self.path)
            # dup2 swaps the file behind our fd number atomically: a flush round's
            # thread syncing it meanwhile syncs the old or the new file, never a
            # closed fd.
            os.dup2(fd, self.fd)
        finally:
            os.close(fd)
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

    def _close_retired(self) -> None:
        # Under the lock: a flush round's thread may be syncing one of them.
        with self._sync_lock:
            while self._retired:
                os.close(self._retired.pop())

    def fsync(self) -> None:
        with self._sync_lock:
            # Read before syncing self.fd: if it is None already, self.fd is the new
            # file (see _rewrite_off_loop), which then holds every line.
            also = self._also_sync
            disk.fdatasync(self.fd)
            if also is not None:
                disk.fdatasync(also)

    def close(self) -> None:
        self._abandon_rewrite()
        self._close_retired()
        os.close(self.fd)
