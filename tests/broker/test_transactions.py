"""Transactions against a real broker process with confluent-kafka (and aiokafka)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from onceflow.kafka_admin import create_topics
from onceflow.testing import BrokerProcess

DEADLINE = 30.0


def txn_producer(bootstrap: str, transactional_id: str, **extra: object) -> Producer:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": transactional_id, **extra}
    )
    producer.init_transactions(DEADLINE)
    return producer


def produce_in_txn(producer: Producer, topic: str, values: list[str], partition: int = 0) -> None:
    producer.begin_transaction()
    for value in values:
        producer.produce(topic, value=value.encode(), partition=partition)
    # librdkafka drops unsent messages on abort, so every test flushes first.
    assert producer.flush(DEADLINE) == 0


def read_all(bootstrap: str, topic: str, isolation: str, partitions: int = 1) -> list[str]:
    """Everything a consumer with ``isolation`` can read now: it reads until its position
    reaches the end that ListOffsets reports for the same isolation level."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
    consumer.assign(tps)
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in range(partitions)
    }
    values: list[str] = []
    deadline = time.monotonic() + DEADLINE
    try:
        while time.monotonic() < deadline:
            positions = {tp.partition: tp.offset for tp in consumer.position(tps)}
            if all(positions[p] >= ends[p] for p in range(partitions)):
                break
            for message in consumer.consume(num_messages=500, timeout=0.2):
                if message.error():
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(message.error())
                values.append(message.value().decode())
        else:
            raise AssertionError(f"consumer did not reach {ends} within {DEADLINE}s")
    finally:
        consumer.close()
    return values


def last_stable_offset(bootstrap: str, topic: str) -> tuple[int, int]:
    """(LSO, high watermark) of partition 0, through ListOffsets per isolation level."""
    ends = []
    for isolation in ("read_committed", "read_uncommitted"):
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "lso-probe",
                "enable.auto.commit": False,
                "isolation.level": isolation,
            }
        )
        try:
            ends.append(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
        finally:
            consumer.close()
    return ends[0], ends[1]


@pytest.fixture
def broker(onceflow_broker_process: BrokerProcess) -> Iterator[BrokerProcess]:
    yield onceflow_broker_process


def test_read_committed_sees_exactly_committed_transactions(broker: BrokerProcess) -> None:
    create_topics(broker.bootstrap, "out")
    first = txn_producer(broker.bootstrap, "txn-a")
    second = txn_producer(broker.bootstrap, "txn-b")

    produce_in_txn(first, "out", [f"committed-{i}" for i in range(10)])
    first.commit_transaction(DEADLINE)
    produce_in_txn(first, "out", [f"aborted-{i}" for i in range(10)])
    first.abort_transaction(DEADLINE)
    produce_in_txn(second, "out", [f"open-{i}" for i in range(5)])  # left open for now
    produce_in_txn(first, "out", [f"later-{i}" for i in range(10)])
    first.commit_transaction(DEADLINE)

    committed = [f"committed-{i}" for i in range(10)]
    # The open transaction pins the LSO: the later commit stays invisible behind it.
    assert read_all(broker.bootstrap, "out", "read_committed") == committed
    everything = read_all(broker.bootstrap, "out", "read_uncommitted")
    assert sorted(everything) == sorted(
        committed
        + [f"aborted-{i}" for i in range(10)]
        + [f"open-{i}" for i in range(5)]
        + [f"later-{i}" for i in range(10)]
    )
    lso, high = last_stable_offset(broker.bootstrap, "out")
    assert lso < high

    second.commit_transaction(DEADLINE)
    visible = read_all(broker.bootstrap, "out", "read_committed")
    assert sorted(visible) == sorted(
        committed + [f"open-{i}" for i in range(5)] + [f"later-{i}" for i in range(10)]
    )
    assert not [v for v in visible if v.startswith("aborted")]
    lso, high = last_stable_offset(broker.bootstrap, "out")
    assert lso == high


def test_zombie_producer_is_fenced(broker: BrokerProcess) -> None:
    create_topics(broker.bootstrap, "fenced")
    zombie = txn_producer(broker.bootstrap, "same-id")
    produce_in_txn(zombie, "fenced", ["zombie-before"])
    zombie.commit_transaction(DEADLINE)

    zombie.begin_transaction()
    zombie.produce("fenced", value=b"zombie-pending")
    assert zombie.flush(DEADLINE) == 0
    successor = txn_producer(broker.bootstrap, "same-id")  # fences the zombie

    with pytest.raises(KafkaException) as raised:
        zombie.commit_transaction(DEADLINE)
    assert raised.value.args[0].fatal() or raised.value.args[0].code() in (
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
    )
    produce_in_txn(successor, "fenced", ["successor"])
    successor.commit_transaction(DEADLINE)

    assert read_all(broker.bootstrap, "fenced", "read_committed") == [
        "zombie-before",
        "successor",
    ]


def test_silent_transaction_times_out_and_is_aborted(broker: BrokerProcess) -> None:
    create_topics(broker.bootstrap, "timeout")
    silent = txn_producer(broker.bootstrap, "silent", **{"transaction.timeout.ms": 2000})
    produce_in_txn(silent, "timeout", [f"never-{i}" for i in range(5)])

    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        lso, high = last_stable_offset(broker.bootstrap, "timeout")
        if lso == high:
            break
    else:
        raise AssertionError("the coordinator never aborted the silent transaction")
    assert high == 6  # five records and the ABORT marker
    assert read_all(broker.bootstrap, "timeout", "read_committed") == []

    other = txn_producer(broker.bootstrap, "after-timeout")
    produce_in_txn(other, "timeout", ["visible"])
    other.commit_transaction(DEADLINE)
    assert read_all(broker.bootstrap, "timeout", "read_committed") == ["visible"]


@pytest.mark.parametrize("moment", ["mid-transaction", "after-commit"])
def test_broker_kill_keeps_exactly_the_committed_transactions(
    broker: BrokerProcess, moment: str
) -> None:
    create_topics(broker.bootstrap, "crash")
    producer = txn_producer(broker.bootstrap, "crashy", **{"transaction.timeout.ms": 5000})
    produce_in_txn(producer, "crash", [f"kept-{i}" for i in range(20)])
    producer.commit_transaction(DEADLINE)
    produce_in_txn(producer, "crash", [f"last-{i}" for i in range(20)])
    if moment == "after-commit":
        producer.commit_transaction(DEADLINE)
        expected = [f"kept-{i}" for i in range(20)] + [f"last-{i}" for i in range(20)]
    else:
        expected = [f"kept-{i}" for i in range(20)]

    broker.kill()
    broker.start()

    if moment == "mid-transaction":
        # The open transaction survives the restart and its timeout then aborts it.
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            lso, high = last_stable_offset(broker.bootstrap, "crash")
            if lso == high:
                break
        else:
            raise AssertionError("hanging transaction pins the LSO after restart")
    assert read_all(broker.bootstrap, "crash", "read_committed") == expected
    lso, high = last_stable_offset(broker.bootstrap, "crash")
    assert lso == high


def test_aiokafka_transactional_producer(broker: BrokerProcess) -> None:
    from aiokafka import AIOKafkaProducer

    create_topics(broker.bootstrap, "aio-txn")

    async def run() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, transactional_id="aio", enable_idempotence=True
        )
        await producer.start()
        try:
            async with producer.transaction():
                for i in range(5):
                    await producer.send("aio-txn", f"aio-committed-{i}".encode(), partition=0)
            await producer.begin_transaction()
            await producer.send_and_wait("aio-txn", b"aio-aborted", partition=0)
            await producer.abort_transaction()
        finally:
            await producer.stop()

    asyncio.run(run())
    assert read_all(broker.bootstrap, "aio-txn", "read_committed") == [
        f"aio-committed-{i}" for i in range(5)
    ]


def test_consume_transform_produce_moves_offsets_only_on_commit(broker: BrokerProcess) -> None:
    create_topics(broker.bootstrap, "ctp-in")
    create_topics(broker.bootstrap, "ctp-out")
    source = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(30):
        source.produce("ctp-in", value=f"in-{i}".encode(), partition=0)
    assert source.flush(DEADLINE) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "ctp",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    producer = txn_producer(broker.bootstrap, "ctp-worker")
    tp = TopicPartition("ctp-in", 0)
    try:
        consumer.subscribe(["ctp-in"])

        def process_batch(commit: bool) -> None:
            batch = []
            deadline = time.monotonic() + DEADLINE
            while len(batch) < 10 and time.monotonic() < deadline:
                batch.extend(m for m in consumer.consume(10 - len(batch), 0.5) if not m.error())
            assert len(batch) == 10
            producer.begin_transaction()
            for message in batch:
                producer.produce("ctp-out", value=b"out-" + message.value()[3:], partition=0)
            producer.send_offsets_to_transaction(
                consumer.position(consumer.assignment()), consumer.consumer_group_metadata()
            )
            if commit:
                producer.commit_transaction(DEADLINE)
            else:
                assert producer.flush(DEADLINE) == 0
                producer.abort_transaction(DEADLINE)

        def committed() -> int:
            return consumer.committed([tp], timeout=10)[0].offset

        process_batch(commit=True)
        assert committed() == 10
        process_batch(commit=False)
        assert committed() == 10  # the aborted transaction's offsets never land
        consumer.seek(TopicPartition("ctp-in", 0, committed()))
        process_batch(commit=True)
        assert committed() == 20
    finally:
        consumer.close()

    assert read_all(broker.bootstrap, "ctp-out", "read_committed") == [
        f"out-{i}" for i in range(20)
    ]


def test_ongoing_transaction_resumes_after_broker_crash(broker: BrokerProcess) -> None:
    create_topics(broker.bootstrap, "resume")
    producer = txn_producer(broker.bootstrap, "resumer", **{"transaction.timeout.ms": 60000})
    produce_in_txn(producer, "resume", [f"survivor-{i}" for i in range(10)])

    broker.kill()  # same machine, same boot: the page cache kept every journal write
    broker.start()

    producer.commit_transaction(DEADLINE)
    assert read_all(broker.bootstrap, "resume", "read_committed") == [
        f"survivor-{i}" for i in range(10)
    ]


def test_ongoing_transaction_is_aborted_after_machine_restart(broker: BrokerProcess) -> None:
    create_topics(broker.bootstrap, "reboot")
    producer = txn_producer(broker.bootstrap, "rebooted", **{"transaction.timeout.ms": 60000})
    produce_in_txn(producer, "reboot", [f"unsure-{i}" for i in range(10)])

    broker.kill()
    # What an operating-system crash leaves: a run that did not shut down cleanly, from
    # another boot, whose unsynced journal records cannot be trusted.
    run_state = broker.data_dir / "transactions.run"
    state = json.loads(run_state.read_text())
    assert state["clean"] is False
    run_state.write_text(json.dumps({"boot_id": "an-earlier-boot", "clean": False}))
    broker.start()

    # Aborted at start, long before the 60 s transaction timeout.
    lso, high = last_stable_offset(broker.bootstrap, "reboot")
    assert lso == high == 11  # ten records and the ABORT marker
    with pytest.raises(KafkaException):
        producer.commit_transaction(DEADLINE)
    assert read_all(broker.bootstrap, "reboot", "read_committed") == []


def test_offset_fetch_waits_while_a_transaction_stages_offsets(broker: BrokerProcess) -> None:
    create_topics(broker.bootstrap, "stable-in")
    tp = TopicPartition("stable-in", 0)
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "stable",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",  # librdkafka then asks for stable offsets
        }
    )
    producer = txn_producer(broker.bootstrap, "stager")
    try:
        consumer.commit(offsets=[TopicPartition("stable-in", 0, 3)], asynchronous=False)
        producer.begin_transaction()
        producer.send_offsets_to_transaction(
            [TopicPartition("stable-in", 0, 7)], consumer.consumer_group_metadata()
        )
        # KIP-447: offset 3 is about to be replaced, so it is not handed out meanwhile.
        with pytest.raises(KafkaException):
            consumer.committed([tp], timeout=2)
        producer.commit_transaction(DEADLINE)
        assert consumer.committed([tp], timeout=10)[0].offset == 7
    finally:
        consumer.close()
