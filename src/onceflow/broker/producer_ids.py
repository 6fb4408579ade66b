"""Durable producer id allocation: ids are never handed out twice, even across crashes."""

from __future__ import annotations

from pathlib import Path

from onceflow.broker.log.atomic import read_json, write_json_atomically

# Ids are reserved on disk a block at a time so that most allocations write nothing.
BLOCK_SIZE = 1000


class ProducerIdAllocator:
    def __init__(self, path: Path) -> None:
        self._path = path
        stored = read_json(path)
        self._next = stored["reserved_until"] if stored else 0
        self._reserved_until = self._next

    def allocate(self) -> int:
        if self._next >= self._reserved_until:
            self._reserved_until = self._next + BLOCK_SIZE
            write_json_atomically(self._path, {"reserved_until": self._reserved_until})
        producer_id = self._next
        self._next += 1
        return producer_id
