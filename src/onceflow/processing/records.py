"""What a process function receives and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message as KafkaMessage


@dataclass(frozen=True)
class Record:
    """One consumed input record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def from_kafka(cls, message: KafkaMessage) -> Record:
        headers = tuple((k, v or b"") for k, v in (message.headers() or []))
        return cls(
            message.topic(), message.partition(), message.offset(),
            message.key(), message.value(), headers,
        )  # fmt: skip

    @property
    def source_key(self) -> str:
        """The record's identity, the default unique key of a database sink."""
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True)
class Message:
    """An output record for a Kafka topic, produced by the runner's producer."""

    topic: str
    value: bytes | str | None
    key: bytes | str | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Row:
    """An output for the runner's database sink.

    ``key`` is the business key that makes the write idempotent; without one the sink
    uses the source record's (topic, partition, offset) plus the row's index.
    """

    value: Any
    key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Output = Message | Row
