"""What the operator commands report, as plain data: tables and ``--json`` are made
from these."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class TopicSummary:
    name: str
    partitions: int
    replication_factor: int


@dataclasses.dataclass(frozen=True, slots=True)
class PartitionDetail:
    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]
    log_start: int
    high_watermark: int
    #: The last stable offset: where read_committed consumers stop.
    last_stable: int
    #: Bytes on disk (DescribeLogDirs), None when the broker does not say.
    size: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class TopicDetail:
    name: str
    partitions: list[PartitionDetail]
    #: Configs set on the topic itself: name -> value.
    configs: dict[str, str | None]


@dataclasses.dataclass(frozen=True, slots=True)
class ConfigValue:
    name: str
    value: str | None
    source: str
    is_default: bool
    is_sensitive: bool


@dataclasses.dataclass(frozen=True, slots=True)
class GroupSummary:
    group: str
    state: str
    kind: str


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    member_id: str
    client_id: str
    host: str
    instance_id: str | None
    assignment: list[tuple[str, int]]


@dataclasses.dataclass(frozen=True, slots=True)
class GroupOffset:
    topic: str
    partition: int
    #: None when the group has no committed offset for the partition.
    committed: int | None
    end: int
    lag: int | None
    member_id: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class GroupDetail:
    group: str
    state: str
    assignor: str
    coordinator: int
    members: list[Member]
    offsets: list[GroupOffset]


@dataclasses.dataclass(frozen=True, slots=True)
class OpenTransaction:
    """A transaction a partition shows open, seen from that partition's leader."""

    topic: str
    partition: int
    producer_id: int
    producer_epoch: int
    coordinator_epoch: int
    #: Offset of its first record: read_committed consumers stop here until it ends.
    first_offset: int
    last_stable: int
    high_watermark: int
    #: Known from the coordinator (ListTransactions) when it still knows the producer.
    transactional_id: str | None
    state: str | None
    #: Milliseconds since it started (coordinator) or since its last write (partition).
    age_ms: int | None

    @property
    def pins_lso(self) -> bool:
        """Whether this transaction is the one holding the partition's LSO back."""
        return self.first_offset == self.last_stable


@dataclasses.dataclass(frozen=True, slots=True)
class TransactionDetail:
    transactional_id: str
    state: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    start_ms: int | None
    coordinator: int
    partitions: list[tuple[str, int]]
    open_on: list[OpenTransaction]


@dataclasses.dataclass(frozen=True, slots=True)
class AbortResult:
    topic: str
    partition: int
    producer_id: int
    producer_epoch: int
    lso_before: int
    lso_after: int


def to_json(value: Any) -> Any:
    """A report value as JSON-ready data (dataclasses become objects)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = dataclasses.asdict(value)
        if isinstance(value, OpenTransaction):
            data["pins_lso"] = value.pins_lso
        return data
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value
