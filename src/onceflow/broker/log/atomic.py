"""Small durable files (metadata, checkpoints, snapshots) replaced atomically."""

from __future__ import annotations

import asyncio
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from onceflow.broker.log import disk
from onceflow.broker.log.disk import fsync_directory

# One thread, so that writes land in the order they were asked for: the last state
# asked for is the one a file ends with.
_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onceflow-metadata")


def write_json_atomically(path: Path, data: Any, mode: int = 0o644) -> None:
    """Write ``data`` so that a crash leaves either the old or the new file, never a mix;
    ``mode`` is the new file's permissions (before the umask)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with open(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, separators=(",", ":"))
        handle.flush()
        disk.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_directory(path.parent)


def write_json_off_loop(path: Path, data: Any) -> asyncio.Future[None]:
    """``write_json_atomically`` on the broker's metadata writer thread, so that its
    fsyncs never stall the event loop; the future completes once the file is durable
    (or fails with the OSError that the write or a sync raised). ``data`` must not
    change afterwards: take a snapshot."""
    return asyncio.get_running_loop().run_in_executor(_WRITER, write_json_atomically, path, data)


def read_json(path: Path) -> Any | None:
    """The stored value, or None when the file is missing."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
