"""Retention by time and by size on small segments, with real clients against a real
broker process whose retention check runs every 100 ms."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic
from interop_support import BASE_TIMESTAMP_MS, Rec, produce_confluent, wait_until

from onceflow.kafka_admin import create_topics
from onceflow.testing import BrokerProcess

TIMEOUT = 15


@pytest.fixture
def broker(
    onceflow_broker_process_factory: Callable[..., BrokerProcess],
) -> Iterator[BrokerProcess]:
    yield onceflow_broker_process_factory(extra_args=("--retention-check-interval-ms", "100"))


def _watermarks(bootstrap: str, topic: str) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT)
    finally:
        consumer.close()


def _records(count: int, timestamp: int, tag: str) -> list[Rec]:
    return [
        Rec(b"k%d" % i, f"{tag}-{i}".encode() + b"." * 100, (), timestamp) for i in range(count)
    ]


def _log_bytes(broker: BrokerProcess, topic: str) -> int:
    """Bytes in the partition's segment files; one deleted while we look counts as 0."""
    total = 0
    for path in (broker.data_dir / f"{topic}-0").glob("*.log"):
        # Retention may remove it between the listing and the stat.
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def _consume_group(bootstrap: str, topic: str, group: str, until_offset: int) -> list[int]:
    """Offsets a group consumer (auto.offset.reset=earliest) reads up to ``until_offset``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "check.crcs": True,
        }
    )
    offsets: list[int] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + TIMEOUT
        while not offsets or offsets[-1] < until_offset - 1:
            assert time.monotonic() < deadline, f"read only up to {offsets[-1:]}"
            for message in consumer.consume(500, timeout=0.5):
                assert message.error() is None, message.error()
                offsets.append(message.offset())
        if offsets:
            consumer.commit(offsets=[TopicPartition(topic, 0, offsets[-1] + 1)], asynchronous=False)
    finally:
        consumer.close()
    return offsets


def _commit(bootstrap: str, topic: str, group: str, offset: int) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


def test_time_retention_deletes_old_segments_and_consumers_reset(broker: BrokerProcess) -> None:
    topic = "by-time"
    # Compacting nothing: only retention may remove data here.
    create_topics(
        broker.bootstrap,
        NewTopic(topic, 1, config={"segment.bytes": "2048", "retention.ms": "3600000"}),
    )
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})

    # Records stamped years ago are past retention.ms at once; recent ones are not.
    old = produce_confluent(producer, topic, _records(200, BASE_TIMESTAMP_MS, "old"))
    fresh_ts = int(time.time() * 1000)
    new = produce_confluent(producer, topic, _records(100, fresh_ts, "new"))
    first_new = new[0].offset()
    assert old[-1].offset() == first_new - 1
    # A group whose committed offset retention is about to delete.
    _commit(broker.bootstrap, topic, "laggard", 5)

    # The old records' own segments go; the one they share with new records stays.
    wait_until(
        lambda: _watermarks(broker.bootstrap, topic)[0] > 5,
        TIMEOUT,
        "retention to advance the log start offset",
    )
    low, high = _watermarks(broker.bootstrap, topic)
    assert low <= first_new, "retention deleted records that are not expired"
    assert high == first_new + 100

    # The group's committed offset (5) is gone: it resets to the earliest and reads on
    # with increasing offsets, every new record included.
    offsets = _consume_group(broker.bootstrap, topic, "laggard", high)
    assert offsets[0] >= low and offsets == sorted(set(offsets))
    assert set(range(first_new, high)) <= set(offsets)

    # Offsets keep growing after retention; a restart keeps the new log start.
    more = produce_confluent(producer, topic, _records(3, fresh_ts, "more"))
    assert more[0].offset() == high
    broker.stop()
    broker.start()
    assert _watermarks(broker.bootstrap, topic)[0] >= low


def test_size_retention_bounds_the_log(broker: BrokerProcess) -> None:
    topic = "by-size"
    create_topics(
        broker.bootstrap,
        NewTopic(
            topic,
            1,
            config={"segment.bytes": "2048", "retention.bytes": "8192", "retention.ms": "-1"},
        ),
    )
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    now = int(time.time() * 1000)
    reports = []
    for round_ in range(5):
        reports += produce_confluent(producer, topic, _records(100, now, f"r{round_}"))
    high = reports[-1].offset() + 1
    wait_until(
        lambda: _log_bytes(broker, topic) <= 8192 + 2 * 2048,
        TIMEOUT,
        "size retention to remove segments",
    )
    low, high_now = _watermarks(broker.bootstrap, topic)
    assert high_now == high and low > 0
    # Everything from the log start on is still there, in order.
    offsets = _consume_group(broker.bootstrap, topic, "sized", high)
    assert offsets[0] >= low and offsets[-1] == high - 1
    assert offsets == list(range(offsets[0], high))
