"""The broker's durability-critical disk calls, and the one fault-injection point for them.

Every fsync, fdatasync, directory sync and log write of the broker goes through here.
In production these are the plain ``os`` calls. A test that starts a broker process
may set ``ONCEFLOW_DISK_FAULTS`` to a JSON object (never set it otherwise) with any of:

- ``"fsync_fail_while": FILE`` -- while FILE exists, syncing a file whose path contains
  ``"paths"`` (default: every path) raises EIO, as a failing disk does;
- ``"write_fail_while": FILE`` -- the same for log writes, raising ENOSPC (disk full);
- ``"fsync_block_while": FILE`` -- syncs of the same ``"paths"`` wait while FILE exists
  (a gate the test opens);
- ``"fsync_record": FILE`` -- after each successful sync, append one JSON line to FILE:
  ``{"ino", "size"}`` for a file (its size before the sync: what is surely on disk),
  ``{"dir", "entries": {name: ino}}`` for a directory, so that a test can rebuild the
  data dir as a power loss would leave it.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAULTS_ENV = "ONCEFLOW_DISK_FAULTS"
# A gate the test forgot to open must not hang a broker forever.
_GATE_LIMIT_SECONDS = 300.0
_GATE_POLL_SECONDS = 0.005


class StorageOffline(OSError):
    """The data dir failed a sync or a write: nothing more may be made durable."""


@dataclass(frozen=True, slots=True)
class _Faults:
    fsync_fail_while: str | None = None
    write_fail_while: str | None = None
    fsync_block_while: str | None = None
    fsync_record: str | None = None
    paths: str = ""


def _load_faults() -> _Faults | None:
    raw = os.environ.get(FAULTS_ENV)
    return _Faults(**json.loads(raw)) if raw else None


_FAULTS = _load_faults()
_RECORD_LOCK = threading.Lock()


def _path_of(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def _inject(fd: int, trigger: str | None, code: int) -> None:
    if trigger is not None and os.path.exists(trigger):
        path = _path_of(fd)
        if _FAULTS is not None and _FAULTS.paths in path:
            raise OSError(code, f"{os.strerror(code)} (injected)", path)


def _before_sync(fd: int) -> dict[str, Any]:
    """Apply the injected faults; returns what the sync will surely make durable (taken
    before it: anything written meanwhile may or may not be covered)."""
    assert _FAULTS is not None
    gate = _FAULTS.fsync_block_while
    if gate is not None and _FAULTS.paths in _path_of(fd):
        deadline = time.monotonic() + _GATE_LIMIT_SECONDS
        while os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(_GATE_POLL_SECONDS)
    _inject(fd, _FAULTS.fsync_fail_while, errno.EIO)
    if _FAULTS.fsync_record is None:
        return {}
    path = _path_of(fd)
    if os.path.isdir(path):
        return {"dir": path, "entries": {e.name: e.inode() for e in os.scandir(path)}}
    return {"ino": os.fstat(fd).st_ino, "size": os.fstat(fd).st_size, "path": path}


def _record(entry: dict[str, Any]) -> None:
    assert _FAULTS is not None
    if _FAULTS.fsync_record is None:
        return
    line = (json.dumps(entry) + "\n").encode()
    with _RECORD_LOCK:
        fd_record = os.open(_FAULTS.fsync_record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd_record, line)
        finally:
            os.close(fd_record)


def _sync(fd: int, call: Callable[[int], None]) -> None:
    if _FAULTS is None:
        call(fd)
        return
    durable = _before_sync(fd)
    call(fd)
    _record(durable)


def fsync(fd: int) -> None:
    _sync(fd, os.fsync)


def fdatasync(fd: int) -> None:
    _sync(fd, os.fdatasync)


def fsync_directory(directory: Path) -> None:
    """Make the directory's entries (files created, renamed, removed in it) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fsync(fd)
    finally:
        os.close(fd)


def write_fully(fd: int, buffers: list[bytes | memoryview], position: int) -> None:
    """pwritev that survives short writes."""
    if _FAULTS is not None:
        _inject(fd, _FAULTS.write_fail_while, errno.ENOSPC)
    views = [memoryview(b) for b in buffers if len(b)]
    while views:
        written = os.pwritev(fd, views, position)
        position += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
