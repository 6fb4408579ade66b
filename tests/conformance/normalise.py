"""kio response entities as plain data, with what may differ between brokers replaced.

Two brokers answering the same request legitimately differ in node ids, ports, cluster
ids, generated ids (producer, member, topic ids), timestamps and throttle times. Those
fields are replaced by placeholders; generated ids by numbered ones in order of first
appearance, so "the same producer id twice" still compares equal to "the same id twice".
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import uuid
from typing import Any

from kio.records.readers import read_batch

# Fields whose values are the broker's own: node ids, addresses, clocks, quotas.
MASKED = frozenset({
    "node_id", "leader_id", "controller_id", "coordinator_id", "broker_id", "host", "port",
    "cluster_id", "throttle_time", "log_append_time", "error_message", "rack",
    "leader_epoch", "current_leader", "node_endpoints", "brokers", "coordinators",
    "cluster_authorized_operations", "topic_authorized_operations", "partition_leader_epoch",
    "crc", "base_timestamp", "max_timestamp", "batch_length", "timestamp", "offline_replicas",
})  # fmt: skip
# Generated ids: equal stays equal, distinct stays distinct.
NUMBERED = frozenset({"producer_id", "member_id", "leader", "topic_id"})
MASK = "<masked>"


class Normaliser:
    """Turns one broker's answers into comparable plain data; numbering is per scenario."""

    def __init__(self) -> None:
        self._numbers: dict[tuple[str, Any], str] = {}

    def _number(self, kind: str, value: Any) -> Any:
        if value in (None, "", -1):
            return value
        key = (kind, value)
        if key not in self._numbers:
            self._numbers[key] = f"<{kind} {sum(k == kind for k, _ in self._numbers) + 1}>"
        return self._numbers[key]

    def plain(self, value: Any, field: str = "") -> Any:
        if field in MASKED:
            return MASK
        if field in NUMBERED:
            kind = "member_id" if field == "leader" else field
            return self._number(kind, self.plain(value))
        if field == "records" and isinstance(value, bytes | bytearray):
            return self._batches(bytes(value))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {
                f.name: self.plain(getattr(value, f.name), f.name)
                for f in dataclasses.fields(value)
            }
        if isinstance(value, tuple | list):
            items = [self.plain(v, field) for v in value]
            # Topics in an answer come in no promised order (Kafka answers errors first).
            if items and all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
                items.sort(key=lambda i: i["name"])
            return items
        if isinstance(value, enum.Enum):
            return value.name
        if isinstance(value, datetime.timedelta):
            return int(value.total_seconds() * 1000)
        if isinstance(value, datetime.datetime):
            return MASK
        if isinstance(value, uuid.UUID):
            return self._number("uuid", value)
        if isinstance(value, bytes | bytearray):
            return bytes(value).hex()
        return value

    def _batches(self, data: bytes) -> list[Any]:
        batches, position = [], 0
        while position < len(data):
            batch, used = read_batch(data, position)
            position += used
            batches.append(self.plain(batch))
        return batches
