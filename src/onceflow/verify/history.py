"""The history of a verify run: one JSON object per line, one file per process.

Every event carries the wall-clock time ``t`` (all processes share one machine's clock),
the OS process id ``pid`` and the role ``proc`` of the process that recorded it, and a
``type``. The types and their fields:

=================  ==================================================================
``intent``         ``orders``: {order id: [customer, amount]} the workload means to charge
``send``           ``topic``, ``id`` (unique per write), ``value_id`` (business id),
                   ``key``, ``txn`` (transaction id or null)
``ack``            ``id``, ``topic``, ``partition``, ``offset``
``ack_error``      ``id``, ``error``
``txn_init``       ``tid``: a transactional producer finished ``init_transactions``
``txn_begin``      ``tid``, ``txn``
``txn_offsets``    ``txn``, ``group``, ``offsets``: [[topic, partition, offset], ...]
``txn_commit_start`` / ``txn_commit`` / ``txn_abort``   ``txn``
``assign`` / ``revoke``  ``partitions``: [[topic, partition], ...]
``seek``           ``topic``, ``partition``, ``offset``: the consumer was moved on purpose
``poll``           ``isolation``, ``topic``, ``partition``, ``offset``, ``id``, ``value_id``,
                   ``key``
``process``        ``topic``, ``partition``, ``offset``, ``value_id``
``sink_write``     ``key``, ``inserted``
``sink_commit``    ``keys`` (inserted since the last commit), ``group``, ``offsets``
``sink_rollback``  (no fields)
``commit``         ``group``, ``offsets``: [[topic, partition, offset], ...]
``fault``          ``name``, ``detail``
``final_read``     ``isolation``, ``topic``, ``records``: [[partition, offset, id,
                   value_id, key], ...]: everything one reader saw at the end
``db_state``       ``ledger``: {order id: amount}, ``balances``: {customer: balance}
=================  ==================================================================
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

Event = dict[str, Any]

# Header that carries a write's unique id, so every copy of a record can be told apart.
WRITE_ID_HEADER = "onceflow.verify.id"


class Recorder:
    """Appends this process's events to its own history file.

    Each line is flushed as it is written, so a process killed with SIGKILL leaves every
    event it recorded before the kill; a torn last line is skipped by ``load``.
    """

    def __init__(self, path: str | Path, proc: str) -> None:
        self.path = Path(path)
        self.proc = proc
        self.pid = os.getpid()
        self._lock = threading.Lock()  # librdkafka callbacks may run on other threads
        self._file: TextIO = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def record(self, type_: str, **fields: Any) -> Event:
        """Write one event now and return it."""
        event = {"t": time.time(), "pid": self.pid, "proc": self.proc, "type": type_, **fields}
        line = json.dumps(event, separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
        return event

    def close(self) -> None:
        with self._lock:
            self._file.close()


def load(path: str | Path) -> list[Event]:
    """The events of one history file, skipping a torn last line left by a kill."""
    events: list[Event] = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def merge(histories: Iterable[Iterable[Event]]) -> list[Event]:
    """One history, ordered by time (stable, so a process's own order is kept)."""
    merged = [event for history in histories for event in history]
    merged.sort(key=lambda event: event["t"])
    return merged


def load_dir(directory: str | Path) -> list[Event]:
    """Merge every ``*.jsonl`` history file of a run directory."""
    return merge(load(path) for path in sorted(Path(directory).glob("*.jsonl")))


def write(path: str | Path, events: Iterable[Event]) -> None:
    """Write a (merged) history as one JSON-lines file."""
    with open(path, "w", encoding="utf-8") as file:
        for event in events:
            file.write(json.dumps(event, separators=(",", ":")) + "\n")
