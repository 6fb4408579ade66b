"""Log compaction with real clients against a real broker process: latest value per key,
tombstones, transactions, a smaller log, offsets unchanged, and kill -9 mid-clean."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from onceflow.kafka_admin import create_topics
from onceflow.testing import BrokerProcess

TIMEOUT = 20
Entry = tuple[int, bytes, bytes | None]


@pytest.fixture
def start_broker(
    onceflow_broker_process_factory: Callable[..., BrokerProcess],
) -> Iterator[Callable[[], BrokerProcess]]:
    # Look for work every 100 ms instead of Kafka's 15 s / 5 min.
    yield lambda: onceflow_broker_process_factory(
        extra_args=("--cleaner-backoff-ms", "100", "--retention-check-interval-ms", "100")
    )


COMPACTED = {
    "cleanup.policy": "compact",
    "segment.bytes": "4096",
    # Rolls the active segment soon after the last write, so all of it becomes cleanable.
    "segment.ms": "300",
    "min.cleanable.dirty.ratio": "0.01",
}


def _produce(producer: Producer, topic: str, items: list[tuple[bytes, bytes | None]]) -> list[int]:
    """Produce (key, value) pairs in order; returns their offsets."""
    offsets: list[int] = [-1] * len(items)
    errors: list[KafkaError] = []

    def report(index: int) -> Callable[[KafkaError | None, object], None]:
        def on_delivery(error: KafkaError | None, message: object) -> None:
            if error is not None:
                errors.append(error)
            else:
                offsets[index] = message.offset()  # type: ignore[attr-defined]

        return on_delivery

    for index, (key, value) in enumerate(items):
        producer.produce(topic, key=key, value=value, partition=0, on_delivery=report(index))
        if index % 500 == 499:
            producer.poll(0)
    assert producer.flush(TIMEOUT) == 0
    assert not errors, errors[:3]
    return offsets


def read_all(bootstrap: str, topic: str, isolation: str = "read_uncommitted") -> list[Entry]:
    """Every record from the log start to the end, as (offset, key, value)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "compaction-reader",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "isolation.level": isolation,
            "check.crcs": True,
        }
    )
    entries: list[Entry] = []
    try:
        consumer.assign([TopicPartition(topic, 0, -2)])  # OFFSET_BEGINNING
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert time.monotonic() < deadline, "never reached the end of the partition"
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
                return entries
            entries.append((message.offset(), message.key(), message.value()))
    finally:
        consumer.close()


def latest_per_key(entries: list[Entry]) -> dict[bytes, tuple[int, bytes | None]]:
    latest: dict[bytes, tuple[int, bytes | None]] = {}
    for offset, key, value in entries:
        latest[key] = (offset, value)
    return latest


def _log_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.log"))


def _wait_compacted(bootstrap: str, topic: str, expected: dict[bytes, tuple[int, bytes | None]],
                    isolation: str = "read_uncommitted") -> list[Entry]:  # fmt: skip
    """Poll until a fresh consumer reads exactly one record per expected key."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        entries = read_all(bootstrap, topic, isolation)
        if {k: (o, v) for o, k, v in entries} == expected and len(entries) == len(expected):
            return entries
        assert time.monotonic() < deadline, (
            f"not compacted in {TIMEOUT}s: {len(entries)} records for {len(expected)} keys"
        )
        time.sleep(0.1)


def _updates(keys: int, rounds: int, tag: str, size: int = 100) -> list[tuple[bytes, bytes | None]]:
    return [
        (b"key-%d" % k, f"{tag}-{k}-{r}-".encode().ljust(size, b"."))
        for r in range(rounds)
        for k in range(keys)
    ]


def test_compaction_keeps_latest_value_per_key(start_broker: Callable[..., BrokerProcess]) -> None:
    broker = start_broker()
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    topics = {"kept-tombstones": "86400000", "dropped-tombstones": "0"}
    for topic, tombstone_ms in topics.items():
        create_topics(
            broker.bootstrap,
            NewTopic(topic, 1, config={**COMPACTED, "delete.retention.ms": tombstone_ms}),
        )

    items = _updates(20, 50, "v") + [(b"key-%d" % k, None) for k in range(5)]
    produced_bytes = sum(len(k) + len(v or b"") for k, v in items)
    for topic, tombstone_ms in topics.items():
        offsets = _produce(producer, topic, items)
        assert offsets == list(range(len(items)))
        expected = latest_per_key([(o, k, v) for o, (k, v) in zip(offsets, items, strict=True)])
        if tombstone_ms == "0":
            expected = {k: ov for k, ov in expected.items() if ov[1] is not None}
        entries = _wait_compacted(broker.bootstrap, topic, expected)
        # Offsets never change: each survivor sits where the producer was told it did.
        assert [o for o, _, _ in entries] == sorted(o for o, _ in expected.values())
        assert _log_bytes(broker.data_dir / f"{topic}-0") < produced_bytes / 5

    # A restart reads the cleaned segments back, and new writes go on from the old end.
    broker.stop()
    broker.start()
    entries = read_all(broker.bootstrap, "dropped-tombstones")
    assert len(entries) == 15 and all(v is not None for _, _, v in entries)
    assert _produce(producer, "dropped-tombstones", [(b"key-0", b"back")]) == [len(items)]


def test_compaction_respects_transactions(start_broker: Callable[..., BrokerProcess]) -> None:
    broker = start_broker()
    topic = "txn-compacted"
    create_topics(
        broker.bootstrap,
        NewTopic(topic, 1, config={**COMPACTED, "delete.retention.ms": "86400000"}),
    )
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "compactor"})
    producer.init_transactions(TIMEOUT)

    def transaction(items: list[tuple[bytes, bytes | None]], commit: bool) -> list[int]:
        producer.begin_transaction()
        offsets = _produce(producer, topic, items)
        if commit:
            producer.commit_transaction(TIMEOUT)
        else:
            producer.abort_transaction(TIMEOUT)
        return offsets

    first = [(b"t%d" % k, b"committed-1") for k in range(10)] * 5
    first_offsets = transaction(first, commit=True)
    transaction([(b"t%d" % k, b"aborted") for k in range(10)], commit=False)
    transaction([(b"u%d" % k, b"aborted-only") for k in range(5)], commit=False)
    second = [(b"t%d" % k, b"committed-2") for k in range(5)]
    second_offsets = transaction(second, commit=True)

    expected = {b"t%d" % k: (second_offsets[k], b"committed-2") for k in range(5)}
    expected |= {b"t%d" % k: (first_offsets[40 + k], b"committed-1") for k in range(5, 10)}
    # read_uncommitted would see the aborted records until the cleaner drops them.
    _wait_compacted(broker.bootstrap, topic, expected, "read_uncommitted")
    assert read_all(broker.bootstrap, topic, "read_committed") == sorted(
        (o, k, v) for k, (o, v) in expected.items()
    )

    # The markers survive: the producer goes on transacting on the cleaned partition.
    third = transaction([(b"t0", b"committed-3")], commit=True)
    committed = read_all(broker.bootstrap, topic, "read_committed")
    assert (third[0], b"t0", b"committed-3") in committed


def test_kill_during_cleaning_loses_nothing(start_broker: Callable[..., BrokerProcess]) -> None:
    broker = start_broker()
    topic = "kill-clean"
    create_topics(
        broker.bootstrap, NewTopic(topic, 1, config={**COMPACTED, "segment.bytes": "16384"})
    )
    directory = broker.data_dir / f"{topic}-0"
    expected: dict[bytes, tuple[int, bytes | None]] = {}
    interrupted = 0
    for round_ in range(4):
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
        items = _updates(30, 60, f"round{round_}", size=200)
        offsets = _produce(producer, topic, items)
        expected |= latest_per_key([(o, k, v) for o, (k, v) in zip(offsets, items, strict=True)])
        # Kill the broker the moment a cleaner pass has started writing (or committed).
        deadline = time.monotonic() + TIMEOUT
        while not ((directory / ".cleaning").exists() or (directory / ".swap").exists()):
            if time.monotonic() > deadline:
                break
            time.sleep(0.001)
        else:
            interrupted += 1
        broker.kill()
        broker.start()
        # Whatever the cleaner had done, the latest value of every key is still there.
        assert latest_per_key(read_all(broker.bootstrap, topic)) == expected
        assert not (directory / ".cleaning").exists() and not (directory / ".swap").exists()
    assert interrupted >= 2, "the cleaner was never caught at work"
    _wait_compacted(broker.bootstrap, topic, expected)
