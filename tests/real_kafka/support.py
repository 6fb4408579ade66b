"""Producing with acknowledgements tracked, and reading a topic back, for Kafka tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from onceflow.testing.kafka import KafkaCluster

DEADLINE = 60.0


def produce_acked(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes],
    config: dict[str, object],
    *,
    after_acks: tuple[int, Callable[[], None]] | None = None,
    batch: int = 100,
    timeout: float = DEADLINE,
) -> list[bytes]:
    """Produce ``values`` ``batch`` at a time, each batch flushed before the next, and
    return those the cluster acknowledged. ``after_acks=(n, f)`` calls ``f`` once ``n``
    are acknowledged: mid-stream, with the rest still to send."""
    acked: list[bytes] = []

    def delivered(err: KafkaError | None, message: object) -> None:
        if err is None:
            acked.append(message.value())  # type: ignore[attr-defined]

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **config})
    deadline = time.monotonic() + timeout
    for start in range(0, len(values), batch):
        for value in values[start : start + batch]:
            producer.produce(topic, value, on_delivery=delivered)
        producer.flush(max(0.1, deadline - time.monotonic()))
        if after_acks is not None and len(acked) >= after_acks[0]:
            after_acks[1]()
            after_acks = None
    producer.flush(max(0.1, deadline - time.monotonic()))
    return acked


def read_values(bootstrap: str, topic: str, partitions: int = 1) -> list[bytes]:
    """Every value in ``topic`` (read_committed), up to the end offsets at call time."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "onceflow-kafka-tests-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in range(partitions)
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        values: list[bytes] = []
        positions = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + DEADLINE
        while any(positions[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                if message.error():
                    continue
                values.append(message.value())
                positions[message.partition()] = message.offset() + 1
            # Transaction markers take offsets no message carries: ask for the position.
            for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                if tp.offset >= 0:
                    positions[tp.partition] = max(positions[tp.partition], tp.offset)
        return values
    finally:
        consumer.close()


__all__ = ["KafkaCluster", "produce_acked", "read_values"]
