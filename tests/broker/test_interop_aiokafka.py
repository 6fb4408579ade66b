"""aiokafka against a real onceflow broker process: producer and assign()-ed consumer."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from interop_support import Rec, assert_records_equal, make_records, without_unsendable

from onceflow.testing import BrokerProcess

COUNT = 500
TIMEOUT = 60.0


async def _produce(bootstrap: str, topic: str, records: list[Rec], **options: object) -> list[int]:
    """Send every record to partition 0 and return the offsets the broker assigned."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **options)
    await producer.start()
    try:
        pending = [
            await producer.send(
                topic,
                value=rec.value,
                key=rec.key,
                partition=0,
                timestamp_ms=rec.timestamp,
                headers=list(rec.headers),
            )
            for rec in records
        ]
        metadata = await asyncio.wait_for(asyncio.gather(*pending), TIMEOUT)
    finally:
        await producer.stop()
    return [m.offset for m in metadata]


async def _consume(bootstrap: str, topic: str, count: int) -> list[ConsumerRecord]:
    """``count`` records from offset 0 of partition 0, without a consumer group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    partition = TopicPartition(topic, 0)
    try:
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        got: list[ConsumerRecord] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while len(got) < count:
            assert loop.time() < deadline, f"consumed {len(got)} of {count} in {TIMEOUT}s"
            batches = await consumer.getmany(partition, timeout_ms=500, max_records=count)
            got += batches.get(partition, [])
        return got
    finally:
        await consumer.stop()


def _rec(record: ConsumerRecord) -> Rec:
    return Rec(record.key, record.value, tuple(record.headers), record.timestamp)


@pytest.mark.parametrize(
    ("idempotence", "compression"),
    [(False, None), (True, None), (False, "gzip"), (True, "gzip")],
    ids=["acks=all", "idempotent", "gzip", "idempotent-gzip"],
)
def test_round_trip(
    shared_broker: BrokerProcess, topic: str, idempotence: bool, compression: str | None
) -> None:
    records = without_unsendable(make_records(COUNT, tag=f"aiokafka-{compression}"))
    offsets = asyncio.run(
        _produce(
            shared_broker.bootstrap,
            topic,
            records,
            enable_idempotence=idempotence,
            compression_type=compression,
        )
    )
    assert offsets == list(range(COUNT))
    consumed = asyncio.run(_consume(shared_broker.bootstrap, topic, COUNT))
    assert [r.offset for r in consumed] == list(range(COUNT))
    assert all(r.timestamp_type == 0 for r in consumed), "expected CreateTime timestamps"
    assert_records_equal(records, [_rec(r) for r in consumed])
