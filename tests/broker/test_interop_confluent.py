"""confluent-kafka (librdkafka) against a real onceflow broker process."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic
from interop_support import (
    BASE_TIMESTAMP_MS,
    Rec,
    assert_records_equal,
    confluent_consumer,
    confluent_rec,
    consume_confluent,
    make_records,
    produce_confluent,
)

from onceflow.kafka_admin import create_topics
from onceflow.testing import BrokerProcess

MATRIX_COUNT = 2_000
LARGE_COUNT = 100_000
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
# Idempotence requires acks=all, so it is only paired with it.
DELIVERY_MODES = [("0", False), ("1", False), ("all", False), ("all", True)]


def _producer(bootstrap: str, **extra: object) -> Producer:
    config: dict[str, object] = {"bootstrap.servers": bootstrap, "linger.ms": 5}
    config.update(extra)
    return Producer(config)


def _creation_error(bootstrap: str, new_topic: NewTopic) -> KafkaError:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    future = admin.create_topics([new_topic], request_timeout=15)[new_topic.topic]
    with pytest.raises(KafkaException) as raised:
        future.result(timeout=30)
    return raised.value.args[0]


def _read_partition(bootstrap: str, topic: str, partition: int, count: int) -> list[Rec]:
    consumer = confluent_consumer(bootstrap)
    try:
        consumer.assign([TopicPartition(topic, partition, 0)])
        messages = consume_confluent(consumer, count)
        offsets = [m.offset() for m in messages]
        assert offsets == list(range(count)), "offsets are not 0..n-1 in order"
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=10, cached=False
        )
        assert (low, high) == (0, count), "partition holds other records than those produced"
        return [confluent_rec(m) for m in messages]
    finally:
        consumer.close()


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    ("acks", "idempotence"),
    DELIVERY_MODES,
    ids=[f"acks={a}{'-idempotent' if i else ''}" for a, i in DELIVERY_MODES],
)
def test_round_trip_matrix(
    shared_broker: BrokerProcess, topic: str, acks: str, idempotence: bool, codec: str
) -> None:
    records = make_records(MATRIX_COUNT, tag=f"{acks}-{codec}")
    producer = _producer(
        shared_broker.bootstrap,
        acks=acks,
        **{"enable.idempotence": idempotence, "compression.type": codec},
    )
    reports = produce_confluent(producer, topic, records)
    assert len(reports) == MATRIX_COUNT
    if acks != "0":
        # Without acks the client never learns offsets; with them, record i must be offset i.
        assert [r.offset() for r in reports] == list(range(MATRIX_COUNT))
    assert_records_equal(records, _read_partition(shared_broker.bootstrap, topic, 0, MATRIX_COUNT))


def test_round_trip_100k_records(shared_broker: BrokerProcess, topic: str) -> None:
    records = make_records(LARGE_COUNT, tag="large")
    producer = _producer(
        shared_broker.bootstrap,
        **{"enable.idempotence": True, "queue.buffering.max.messages": LARGE_COUNT},
    )
    reports = produce_confluent(producer, topic, records, timeout=120)
    assert [r.offset() for r in reports] == list(range(LARGE_COUNT))
    assert_records_equal(records, _read_partition(shared_broker.bootstrap, topic, 0, LARGE_COUNT))


def test_keyed_records_keep_per_partition_order(shared_broker: BrokerProcess, topic: str) -> None:
    partitions = 6
    create_topics(shared_broker.bootstrap, NewTopic(topic, num_partitions=partitions))
    records = [
        Rec(f"user-{i % 40}".encode(), f"event-{i}".encode(), (), BASE_TIMESTAMP_MS + i)
        for i in range(1_200)
    ]
    producer = _producer(shared_broker.bootstrap, **{"enable.idempotence": True})
    reports = produce_confluent(producer, topic, records, partition=None)

    expected: dict[int, list[Rec]] = defaultdict(list)
    partition_of_key: dict[bytes, int] = {}
    # Delivery reports of one partition arrive in offset order; sorting makes that explicit.
    for report in sorted(reports, key=lambda r: (r.partition(), r.offset())):
        rec = confluent_rec(report)
        expected[report.partition()].append(rec)
        assert partition_of_key.setdefault(rec.key, report.partition()) == report.partition()
    # 40 keys land on every partition with librdkafka's (deterministic) key hashing.
    assert sorted(expected) == list(range(partitions))
    for partition in range(partitions):
        got = _read_partition(shared_broker.bootstrap, topic, partition, len(expected[partition]))
        assert_records_equal(expected[partition], got)
        # Each partition preserves the produce order of its records.
        assert [r.timestamp for r in got] == sorted(r.timestamp for r in got)


def test_create_topics_refusals(shared_broker: BrokerProcess, topic: str) -> None:
    bootstrap = shared_broker.bootstrap
    error = _creation_error(bootstrap, NewTopic(topic, num_partitions=1, replication_factor=3))
    assert error.code() == KafkaError.INVALID_REPLICATION_FACTOR
    assert "replication" in error.str().lower(), "the broker's message should say why"

    create_topics(bootstrap, NewTopic(topic, num_partitions=2))
    error = _creation_error(bootstrap, NewTopic(topic, num_partitions=2))
    assert error.code() == KafkaError.TOPIC_ALREADY_EXISTS

    error = _creation_error(bootstrap, NewTopic("no spaces/or slashes!", num_partitions=1))
    assert error.code() == KafkaError.TOPIC_EXCEPTION
    assert "no spaces/or slashes!" in error.str(), "the broker's message should name the topic"

    listed = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=15).topics
    assert "no spaces/or slashes!" not in listed
    assert sorted(listed[topic].partitions) == [0, 1], "the refused re-creation changed it"


def test_list_topics_and_watermarks(shared_broker: BrokerProcess, topic: str) -> None:
    create_topics(shared_broker.bootstrap, NewTopic(topic, num_partitions=3))
    produce_confluent(_producer(shared_broker.bootstrap), topic, make_records(25), partition=1)

    metadata = AdminClient({"bootstrap.servers": shared_broker.bootstrap}).list_topics(timeout=15)
    assert len(metadata.brokers) == 1
    (node,) = metadata.brokers
    assert metadata.topics[topic].error is None
    partitions = metadata.topics[topic].partitions
    assert sorted(partitions) == [0, 1, 2]
    assert all(p.leader == node and p.replicas == [node] for p in partitions.values())

    consumer = confluent_consumer(shared_broker.bootstrap)
    try:
        marks = [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            for p in range(3)
        ]
        assert marks == [(0, 0), (0, 25), (0, 0)]
    finally:
        consumer.close()


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_offsets_for_times(shared_broker: BrokerProcess, topic: str, codec: str) -> None:
    step = 10
    count = 500
    records = [
        Rec(None, f"at-{i}".encode(), (), BASE_TIMESTAMP_MS + step * i) for i in range(count)
    ]
    # A long linger packs many records per batch, so lookups land inside (compressed) batches.
    producer = _producer(shared_broker.bootstrap, **{"compression.type": codec, "linger.ms": 50})
    produce_confluent(producer, topic, records)

    def offset_for(timestamp: int) -> int:
        (found,) = consumer.offsets_for_times([TopicPartition(topic, 0, timestamp)], timeout=15)
        assert found.error is None
        return found.offset

    consumer = confluent_consumer(shared_broker.bootstrap)
    try:
        assert offset_for(BASE_TIMESTAMP_MS + step * 271) == 271
        assert offset_for(BASE_TIMESTAMP_MS + step * 271 + 1) == 272
        assert offset_for(BASE_TIMESTAMP_MS - 5_000) == 0
        assert offset_for(BASE_TIMESTAMP_MS + step * (count - 1)) == count - 1
        # Past the newest record there is no such offset: the broker answers -1 (the end).
        assert offset_for(BASE_TIMESTAMP_MS + step * count) == OFFSET_END
    finally:
        consumer.close()


def test_offset_beginning_and_end(shared_broker: BrokerProcess, topic: str) -> None:
    count = 30
    producer = _producer(shared_broker.bootstrap, **{"linger.ms": 0})
    old = make_records(count, tag="old")
    produce_confluent(producer, topic, old)

    consumer = confluent_consumer(shared_broker.bootstrap)
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        from_start = consume_confluent(consumer, count)
        assert [m.offset() for m in from_start] == list(range(count))
        assert_records_equal(old, [confluent_rec(m) for m in from_start])

        # The client resolves OFFSET_END at some unobservable moment, so keep producing
        # probes until one arrives: the first one seen must be new, never an old record.
        consumer.assign([TopicPartition(topic, 0, OFFSET_END)])
        probes: list[Rec] = []
        message = None
        deadline = time.monotonic() + 30
        while message is None and len(probes) < 300 and time.monotonic() < deadline:
            probes += make_records(1, tag=f"probe-{len(probes)}", edge_cases=False)
            produce_confluent(producer, topic, probes[-1:])
            message = consumer.poll(0.1)
        assert message is not None, f"nothing consumed after {len(probes)} probes"
        assert message.error() is None, message.error()
        assert message.offset() >= count, "OFFSET_END delivered an old record"
        assert confluent_rec(message) == probes[message.offset() - count]
    finally:
        consumer.close()


def test_long_poll_wakes_on_new_record(shared_broker: BrokerProcess, topic: str) -> None:
    create_topics(shared_broker.bootstrap, NewTopic(topic, num_partitions=1))
    # The fetch wait is far longer than the test's deadline: the record can only arrive
    # in time if the broker answers the parked fetch as soon as the record is appended.
    consumer = confluent_consumer(
        shared_broker.bootstrap, **{"fetch.wait.max.ms": 60_000, "socket.timeout.ms": 90_000}
    )
    producer = _producer(shared_broker.bootstrap, **{"linger.ms": 0})
    (record,) = make_records(1, tag="late", edge_cases=False)
    produced_at: list[float] = []

    def produce_late() -> None:
        produce_confluent(producer, topic, [record])
        produced_at.append(time.monotonic())

    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        assert consumer.poll(0.2) is None, "the partition should start empty"
        timer = threading.Timer(0.5, produce_late)
        timer.start()
        try:
            (message,) = consume_confluent(consumer, 1, timeout=20)
        finally:
            timer.join(30)
        assert produced_at, "the late producer did not finish"
        assert confluent_rec(message) == record
        assert message.offset() == 0
    finally:
        consumer.close()
