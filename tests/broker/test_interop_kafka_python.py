"""kafka-python against a real onceflow broker process: producer, assign()-ed consumer, admin."""

from __future__ import annotations

import time

import pytest
from interop_support import Rec, assert_records_equal, make_records, without_unsendable
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import InvalidReplicationFactorError, TopicAlreadyExistsError

from onceflow.testing import BrokerProcess

COUNT = 500
TIMEOUT = 60.0


def _produce(
    bootstrap: str, topic: str, records: list[Rec], partition: int = 0, **options: object
) -> list[int]:
    """Send every record to ``partition``; return the offsets the broker assigned."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **options)
    try:
        futures = [
            producer.send(
                topic,
                value=rec.value,
                key=rec.key,
                headers=list(rec.headers),
                partition=partition,
                timestamp_ms=rec.timestamp,
            )
            for rec in records
        ]
        producer.flush(TIMEOUT)
        return [f.get(timeout=TIMEOUT).offset for f in futures]
    finally:
        producer.close(timeout=10)


def _consume(bootstrap: str, topic: str, count: int, partition: int = 0) -> list[ConsumerRecord]:
    """``count`` records from the start of ``partition``, without a consumer group."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    assigned = TopicPartition(topic, partition)
    try:
        consumer.assign([assigned])
        consumer.seek_to_beginning(assigned)
        got: list[ConsumerRecord] = []
        deadline = time.monotonic() + TIMEOUT
        while len(got) < count:
            assert time.monotonic() < deadline, f"consumed {len(got)} of {count} in {TIMEOUT}s"
            got += consumer.poll(timeout_ms=500, max_records=count).get(assigned, [])
        return got
    finally:
        consumer.close()


def _rec(record: ConsumerRecord) -> Rec:
    return Rec(record.key, record.value, tuple(record.headers), record.timestamp)


@pytest.mark.parametrize(
    ("idempotence", "compression"),
    [(False, None), (True, None), (True, "gzip")],
    ids=["acks=all", "idempotent", "idempotent-gzip"],
)
def test_round_trip(
    shared_broker: BrokerProcess, topic: str, idempotence: bool, compression: str | None
) -> None:
    records = without_unsendable(make_records(COUNT, tag=f"kafka-python-{compression}"))
    offsets = _produce(
        shared_broker.bootstrap,
        topic,
        records,
        enable_idempotence=idempotence,
        compression_type=compression,
    )
    assert offsets == list(range(COUNT))
    consumed = _consume(shared_broker.bootstrap, topic, COUNT)
    assert [r.offset for r in consumed] == list(range(COUNT))
    assert all(r.timestamp_type == 0 for r in consumed), "expected CreateTime timestamps"
    assert_records_equal(records, [_rec(r) for r in consumed])


def test_admin_create_topics(shared_broker: BrokerProcess, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        with pytest.raises(InvalidReplicationFactorError):
            admin.create_topics([NewTopic(f"{topic}-rf3", num_partitions=1, replication_factor=3)])
        assert topic in admin.list_topics()
        assert f"{topic}-rf3" not in admin.list_topics()
    finally:
        admin.close()

    # The last of the three partitions exists and serves data.
    records = without_unsendable(make_records(20, tag="admin"))
    assert _produce(shared_broker.bootstrap, topic, records, partition=2) == list(range(20))
    assert_records_equal(
        records, [_rec(r) for r in _consume(shared_broker.bootstrap, topic, 20, partition=2)]
    )
