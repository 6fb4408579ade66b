"""Helpers for the client interop tests: deterministic records, bounded waits, and
confluent-kafka produce/consume loops that fail loudly instead of hanging."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer

# A fixed epoch in the past, so explicit timestamps can never be confused with "now".
BASE_TIMESTAMP_MS = 1_600_000_000_000


@dataclass(frozen=True, slots=True)
class Rec:
    """One record as every client can express it; the unit of comparison."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = field(default=())
    timestamp: int = BASE_TIMESTAMP_MS


def make_records(
    count: int, *, tag: str = "r", base_ts: int = BASE_TIMESTAMP_MS, edge_cases: bool = True
) -> list[Rec]:
    """Distinct records with varied sizes; ``edge_cases`` adds null keys, null and empty
    values and headers without value, which some clients cannot send."""
    records = []
    for i in range(count):
        key: bytes | None = f"{tag}-key-{i % 97}".encode()
        value: bytes | None = f"{tag}-value-{i}-".encode() + bytes([i % 251]) * (i % 300)
        headers: tuple[tuple[str, bytes | None], ...] = (("index", str(i).encode()),)
        if i % 3 == 0:
            headers += (("tag", tag.encode()), ("index", b"repeated-name"))
        if edge_cases:
            if i % 7 == 0:
                key = None
            if i % 11 == 0:
                value = b""
            if i % 13 == 0:
                value = None
            if i % 5 == 0:
                headers = ()
            if i % 17 == 0:
                headers += (("null-header", None),)
        records.append(Rec(key, value, headers, base_ts + i))
    return records


def without_unsendable(records: Iterable[Rec]) -> list[Rec]:
    """The records aiokafka and kafka-python can send: they refuse a header without a
    value and a record with neither key nor value."""
    return [
        Rec(
            b"key-for-null-value" if rec.key is None and rec.value is None else rec.key,
            rec.value,
            tuple(h for h in rec.headers if h[1] is not None),
            rec.timestamp,
        )
        for rec in records
    ]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def assert_records_equal(expected: Sequence[Rec], got: Sequence[Rec]) -> None:
    """Compare in order; on mismatch report the first differing index, not a huge diff."""
    for index, (want, have) in enumerate(zip(expected, got, strict=False)):
        assert have == want, f"record {index} differs: expected {want}, got {have}"
    assert len(got) == len(expected), f"expected {len(expected)} records, got {len(got)}"


# -- confluent-kafka ---------------------------------------------------------------


def confluent_consumer(bootstrap: str, **extra: Any) -> Consumer:
    """A consumer for assign(): no auto commit, because without a group coordinator
    close() would wait ~45 s trying to commit."""
    config = {
        "bootstrap.servers": bootstrap,
        "group.id": "onceflow-interop-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
    }
    config.update(extra)
    return Consumer(config)


def confluent_rec(message: Message) -> Rec:
    return Rec(
        message.key(),
        message.value(),
        tuple(message.headers() or ()),
        message.timestamp()[1],
    )


def produce_confluent(
    producer: Producer,
    topic: str,
    records: Iterable[Rec],
    *,
    partition: int | None = 0,
    timeout: float = 60.0,
) -> list[Message]:
    """Produce and flush; return the delivery reports in the order they arrived.

    Delivery errors fail the test here, where the cause is still visible.
    """
    reports: list[Message] = []
    errors: list[Any] = []

    def on_delivery(error: Any, message: Message) -> None:
        if error is not None:
            errors.append(error)
        reports.append(message)

    options: dict[str, Any] = {} if partition is None else {"partition": partition}
    deadline = time.monotonic() + timeout
    for rec in records:
        while True:
            try:
                producer.produce(
                    topic,
                    value=rec.value,
                    key=rec.key,
                    headers=list(rec.headers),
                    timestamp=rec.timestamp,
                    on_delivery=on_delivery,
                    **options,
                )
                break
            except BufferError:
                # Local queue full: serve delivery reports to make room, within the deadline.
                assert time.monotonic() < deadline, "producer queue stayed full"
                producer.poll(0.05)
    remaining = producer.flush(max(0.0, deadline - time.monotonic()))
    assert remaining == 0, f"{remaining} messages still undelivered after {timeout}s"
    assert not errors, f"delivery failed: {errors[:3]}"
    return reports


def consume_confluent(consumer: Consumer, count: int, timeout: float = 60.0) -> list[Message]:
    """Exactly ``count`` messages from the assigned partitions, or fail at the deadline."""
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(messages) < count:
        assert time.monotonic() < deadline, (
            f"consumed {len(messages)} of {count} messages in {timeout}s"
        )
        for message in consumer.consume(min(count - len(messages), 10_000), timeout=0.5):
            if message.error() is not None:
                raise KafkaException(message.error())
            messages.append(message)
    return messages
