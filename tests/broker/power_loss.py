"""Rebuild a data dir as a power loss would leave it, from what the broker fsynced.

The broker process runs with ``fsync_record`` (see ``onceflow.broker.log.disk``): each
file sync logs the file's inode and the size it surely made durable, each directory sync
the entries (name -> inode) it made durable. A power loss keeps exactly that, in the
worst case: a file survives only if its entry was in a synced listing of its directory
(recursively), cut back to the size its inode was last synced at (0 if never).

One simplification: when a name's durable entry points to another inode than the file
now there (a rename not yet synced), the current file is kept at its own synced size,
as if that rename had reached the disk; the broker syncs every file it renames before
the rename, so either outcome of such a rename is a state it must recover from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

#: The run state the transaction coordinator checks: a power loss is also a new boot.
RUN_STATE_FILE = "transactions.run"


def rebuild_after_power_loss(data_dir: Path, record: Path, target: Path) -> None:
    """Write into ``target`` (created) what ``data_dir`` would hold after a power loss."""
    sizes: dict[int, int] = {}
    listings: dict[str, set[str]] = {}
    for line in record.read_text().splitlines():
        entry = json.loads(line)
        if "dir" in entry:
            listings[entry["dir"]] = set(entry["entries"])
        else:
            sizes[entry["ino"]] = entry["size"]
    target.mkdir()
    _rebuild_dir(data_dir.resolve(), target, sizes, listings)
    run_state = target / RUN_STATE_FILE
    if run_state.exists():
        state = json.loads(run_state.read_text())
        run_state.write_text(json.dumps({**state, "boot_id": "the-boot-before-the-power-cut"}))


def _rebuild_dir(
    source: Path, target: Path, sizes: dict[int, int], listings: dict[str, set[str]]
) -> None:
    durable = listings.get(str(source), set())
    for entry in os.scandir(source):
        if entry.name not in durable:
            continue
        if entry.is_dir(follow_symlinks=False):
            (target / entry.name).mkdir()
            _rebuild_dir(Path(entry.path), target / entry.name, sizes, listings)
            continue
        with open(entry.path, "rb") as handle:
            kept = handle.read(sizes.get(entry.inode(), 0))
        (target / entry.name).write_bytes(kept)
