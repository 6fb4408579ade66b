"""Consumer groups and committed offsets with real clients over real TCP.

Consumers that get killed run as their own processes (``group_worker.py``); the
others run in the test process. Session timeouts are short (6 s, the broker's
minimum) so failover tests stay fast.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from group_worker import Worker
from interop_support import wait_until

from onceflow.broker.server import BrokerThread
from onceflow.kafka_admin import create_topics
from onceflow.testing import BrokerProcess

SESSION_MS = 6000
SESSION_S = SESSION_MS / 1000


def _produce(bootstrap: str, topic: str, values: list[str], partitions: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for index, value in enumerate(values):
        producer.produce(topic, value=value.encode(), partition=index % partitions)
    assert producer.flush(30) == 0


def _consumer(bootstrap: str, group: str, **extra: object) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": SESSION_MS,
            "heartbeat.interval.ms": 500,
            **extra,
        }
    )


def _owned_when_consumed(worker: Worker) -> list[tuple[int, set[int]]]:
    """(partition of each record, partitions the worker owned when it got the record)."""
    owned: set[int] = set()
    seen = []
    for event in worker.snapshot():
        if event["ev"] == "assign":
            owned |= set(event["parts"])
        elif event["ev"] == "revoke":
            owned -= set(event["parts"])
        elif event["ev"] == "rec":
            seen.append((event["p"], set(owned)))
    return seen


def _assigned_counts(worker: Worker) -> list[int]:
    # librdkafka also reports empty increments during cooperative rebalances.
    return [len(e["parts"]) for e in worker.of("assign") if e["parts"]]


def _split_evenly(workers: list[Worker], partitions: int) -> bool:
    owned = [w.assignment() for w in workers]
    union = set().union(*owned)
    return union == set(range(partitions)) and sum(len(o) for o in owned) == partitions


def test_three_consumers_share_partitions_and_take_over_from_a_killed_one(
    onceflow_broker_process: BrokerProcess, tmp_path: Path
) -> None:
    bootstrap = onceflow_broker_process.bootstrap
    create_topics(bootstrap, "orders", partitions=6)
    options = {"bootstrap": bootstrap, "group": "billing", "topic": "orders"}
    workers = [Worker(f"w{i}", tmp_path, **options) for i in range(3)]
    try:
        wait_until(
            lambda: _split_evenly(workers, 6) and all(len(w.assignment()) == 2 for w in workers),
            45,
            "three consumers with two partitions each",
        )
        first = [f"first-{i}" for i in range(120)]
        _produce(bootstrap, "orders", first, 6)
        wait_until(
            lambda: {e["v"] for w in workers for e in w.of("committed")} == set(first),
            30,
            "the first batch consumed and committed",
        )

        victim, survivors = workers[0], workers[1:]
        killed_at = time.monotonic()
        victim.kill()
        wait_until(lambda: _split_evenly(survivors, 6), SESSION_S + 10, "survivors own all")
        took_over_after = time.monotonic() - killed_at
        # Eviction after the session timeout, then one heartbeat and a rejoin.
        assert took_over_after < SESSION_S + 4, took_over_after

        second = [f"second-{i}" for i in range(120)]
        _produce(bootstrap, "orders", second, 6)
        wait_until(
            lambda: {v for w in survivors for v in w.values()} >= set(second),
            30,
            "the second batch consumed",
        )
        # Everything was committed before the kill, so nothing is read twice or lost.
        consumed = Counter(v for w in workers for v in w.values())
        assert consumed == Counter(first + second)
        for worker in workers:
            for partition, owned in _owned_when_consumed(worker):
                assert partition in owned, (
                    f"{worker.name} read partition {partition} it did not own"
                )
        assert not any(w.of("commit_failed") for w in workers)
    finally:
        for worker in workers:
            worker.stop()


def test_commit_after_processing_resumes_at_the_committed_offset(
    onceflow_broker: BrokerThread, tmp_path: Path
) -> None:
    bootstrap = onceflow_broker.bootstrap
    create_topics(bootstrap, "ledger", partitions=1)
    values = [f"v{i}" for i in range(40)]
    _produce(bootstrap, "ledger", values, 1)
    options = {"bootstrap": bootstrap, "group": "resume", "topic": "ledger", "mode": "after"}

    first = Worker("first", tmp_path, stop_after=15, **options)
    first.wait_for(lambda w: w.exited(), what="the first consumer to stop")
    assert first.stop() == 0
    assert [e["o"] for e in first.of("committed")] == list(range(15))

    second = Worker("second", tmp_path, **options)
    try:
        second.wait_for(lambda w: len(w.of("rec")) == 25, what="the rest of the records")
        assert second.of("rec")[0]["o"] == 15
        assert first.values() + second.values() == values
    finally:
        second.stop()


def test_commit_before_processing_skips_the_record_of_a_crash(
    onceflow_broker: BrokerThread, tmp_path: Path
) -> None:
    bootstrap = onceflow_broker.bootstrap
    create_topics(bootstrap, "alerts", partitions=1)
    values = [f"v{i}" for i in range(30)]
    _produce(bootstrap, "alerts", values, 1)
    options = {"bootstrap": bootstrap, "group": "amo", "topic": "alerts", "mode": "before"}

    crashing = Worker("crashing", tmp_path, crash_at=10, **options)
    crashing.wait_for(lambda w: w.exited(), what="the crash")
    assert crashing.stop() == 17
    assert [e["o"] for e in crashing.of("committed")] == list(range(10))
    assert [e["o"] for e in crashing.of("rec")] == list(range(9))

    restarted = Worker("restarted", tmp_path, **options)
    try:
        restarted.wait_for(lambda w: len(w.of("rec")) == 20, what="the remaining records")
        processed = crashing.values() + restarted.values()
        # At most once: the record committed but not processed is lost, nothing repeats.
        assert processed == values[:9] + values[10:]
    finally:
        restarted.stop()


def test_acknowledged_commits_survive_kill_9_of_the_broker(
    onceflow_broker_process: BrokerProcess,
) -> None:
    broker = onceflow_broker_process
    create_topics(broker.bootstrap, "payments", partitions=4)
    _produce(broker.bootstrap, "payments", [f"v{i}" for i in range(40)], 4)
    acked: dict[str, list[TopicPartition]] = {}
    errors: list[BaseException] = []

    def commit_many(group: str) -> None:
        # Standalone consumers committing concurrently share the broker's fsync rounds.
        consumer = _consumer(broker.bootstrap, group)
        try:
            for round_ in range(1, 31):
                offsets = [
                    TopicPartition(
                        "payments", p, round_ * 10 + p, leader_epoch=0, metadata=f"{group}:{round_}"
                    )
                    for p in range(4)
                ]
                consumer.commit(offsets=offsets, asynchronous=False)
                acked[group] = offsets
        except BaseException as exc:
            errors.append(exc)
        finally:
            consumer.close()

    threads = [threading.Thread(target=commit_many, args=(f"g{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(acked) == 4

    broker.kill()
    broker.start()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for group, offsets in acked.items():
        result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])
        got = {tp.partition: tp for tp in result[group].result(15).topic_partitions}
        for want in offsets:
            assert got[want.partition].offset == want.offset
            assert got[want.partition].metadata == want.metadata
            assert got[want.partition].leader_epoch == 0


def test_admin_client_lists_and_describes_groups_and_their_offsets(
    onceflow_broker: BrokerThread,
) -> None:
    bootstrap = onceflow_broker.bootstrap
    create_topics(bootstrap, "inventory", partitions=4)
    _produce(bootstrap, "inventory", [f"v{i}" for i in range(8)], 4)
    consumers = [_consumer(bootstrap, "stock", **{"client.id": f"stock-{i}"}) for i in range(2)]
    standalone = _consumer(bootstrap, "audit")
    try:
        for consumer in consumers:
            consumer.subscribe(["inventory"])
        got = 0
        deadline = time.monotonic() + 30
        while (
            got < 8 or any(len(c.assignment()) != 2 for c in consumers)
        ) and time.monotonic() < deadline:
            for consumer in consumers:
                message = consumer.poll(0.05)
                if message is not None and not message.error():
                    got += 1
                    consumer.commit(message=message, asynchronous=False)
        assert got == 8 and all(len(c.assignment()) == 2 for c in consumers)
        standalone.commit(offsets=[TopicPartition("inventory", 0, 5)], asynchronous=False)

        admin = AdminClient({"bootstrap.servers": bootstrap})
        listed = {g.group_id: g for g in admin.list_consumer_groups().result(15).valid}
        assert listed["stock"].state == ConsumerGroupState.STABLE
        assert not listed["stock"].is_simple_consumer_group
        assert listed["audit"].state == ConsumerGroupState.EMPTY
        assert listed["audit"].is_simple_consumer_group
        stable_only = admin.list_consumer_groups(states={ConsumerGroupState.STABLE}).result(15)
        assert [g.group_id for g in stable_only.valid] == ["stock"]

        described = admin.describe_consumer_groups(["stock"])["stock"].result(15)
        assert described.state == ConsumerGroupState.STABLE
        assert described.partition_assignor == "range"
        assert sorted(m.client_id for m in described.members) == ["stock-0", "stock-1"]
        assigned = sorted(
            tp.partition for m in described.members for tp in m.assignment.topic_partitions
        )
        assert assigned == [0, 1, 2, 3]

        offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("stock")])
        committed = {tp.partition: tp.offset for tp in offsets["stock"].result(15).topic_partitions}
        assert committed == {0: 2, 1: 2, 2: 2, 3: 2}
        audit = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("audit")])
        assert [(tp.partition, tp.offset) for tp in audit["audit"].result(15).topic_partitions] == [
            (0, 5)
        ]
    finally:
        for consumer in [*consumers, standalone]:
            consumer.close()


def test_cooperative_sticky_rebalances_incrementally(
    onceflow_broker: BrokerThread, tmp_path: Path
) -> None:
    bootstrap = onceflow_broker.bootstrap
    create_topics(bootstrap, "events", partitions=6)
    options = {
        "bootstrap": bootstrap,
        "group": "coop",
        "topic": "events",
        "assignor": "cooperative-sticky",
    }
    first = Worker("first", tmp_path, **options)
    second: Worker | None = None
    try:
        first.wait_for(lambda w: w.assignment() == set(range(6)), what="all six partitions")
        second = Worker("second", tmp_path, **options)
        wait_until(
            lambda: _split_evenly([first, second], 6) and len(first.assignment()) == 3, 30, "3+3"
        )
        # Incremental: the first consumer gave up three partitions and kept the others
        # throughout; it never revoked everything as an eager protocol would.
        revokes = first.of("revoke")
        assert revokes and all(len(r["parts"]) < 6 for r in revokes)
        assert _assigned_counts(first) == [6]

        values = [f"v{i}" for i in range(60)]
        _produce(bootstrap, "events", values, 6)
        wait_until(
            lambda: sorted(first.values() + second.values()) == sorted(values), 30, "all records"
        )
        second.stop()
        # The leaving member's partitions go back incrementally too.
        first.wait_for(lambda w: w.assignment() == set(range(6)), what="the partitions back")
        assert _assigned_counts(first) == [6, 3]
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_static_member_keeps_its_assignment_across_a_quick_restart(
    onceflow_broker: BrokerThread, tmp_path: Path
) -> None:
    bootstrap = onceflow_broker.bootstrap
    create_topics(bootstrap, "shipments", partitions=6)
    options = {"bootstrap": bootstrap, "group": "static", "topic": "shipments"}
    first = Worker("a", tmp_path, instance_id="member-a", **options)
    second = Worker("b", tmp_path, instance_id="member-b", **options)
    restarted: Worker | None = None
    try:
        wait_until(
            lambda: _split_evenly([first, second], 6) and len(first.assignment()) == 3,
            45,
            "two static members with three partitions each",
        )
        before = first.assignment()
        assigns_of_second = len(second.of("assign"))
        revokes_of_second = len(second.of("revoke"))
        first.kill()
        restarted = Worker("a2", tmp_path, instance_id="member-a", **options)
        restarted.wait_for(lambda w: bool(w.assignment()), what="the restarted member's partitions")
        assert restarted.assignment() == before
        # The other member saw no rebalance at all.
        time_after = time.monotonic() + 1.5
        wait_until(lambda: time.monotonic() > time_after, 3, "a heartbeat or two")
        assert len(second.of("assign")) == assigns_of_second
        assert len(second.of("revoke")) == revokes_of_second
    finally:
        for worker in (first, second, restarted):
            if worker is not None:
                worker.stop()


def test_aiokafka_consumer_group(onceflow_broker: BrokerThread) -> None:
    aiokafka = pytest.importorskip("aiokafka")
    bootstrap = onceflow_broker.bootstrap
    create_topics(bootstrap, "aio", partitions=4)
    values = [f"v{i}" for i in range(40)]
    _produce(bootstrap, "aio", values, 4)

    async def run() -> tuple[list[str], list[set[int]], dict[int, int]]:
        consumers = [
            aiokafka.AIOKafkaConsumer(
                "aio",
                bootstrap_servers=bootstrap,
                group_id="aio-group",
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                session_timeout_ms=SESSION_MS,
                heartbeat_interval_ms=500,
            )
            for _ in range(2)
        ]
        for consumer in consumers:
            await consumer.start()
        got: list[str] = []
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                for consumer in consumers:
                    batches = await consumer.getmany(timeout_ms=100)
                    for records in batches.values():
                        got.extend(r.value.decode() for r in records)
                    if batches:
                        await consumer.commit()
                balanced = all(len(c.assignment()) == 2 for c in consumers)
                if len(got) >= len(values) and balanced:
                    break
            owned = [{tp.partition for tp in c.assignment()} for c in consumers]
            committed = {}
            for p in range(4):
                tp = aiokafka.TopicPartition("aio", p)
                committed[p] = await consumers[0].committed(tp)
            return got, owned, committed
        finally:
            for consumer in consumers:
                await consumer.stop()

    got, owned, committed = asyncio.run(asyncio.wait_for(run(), 60))
    assert sorted(got) == sorted(values)
    assert owned[0] | owned[1] == {0, 1, 2, 3} and not owned[0] & owned[1]
    assert committed == {0: 10, 1: 10, 2: 10, 3: 10}


def test_kafka_python_and_librdkafka_consumers_share_a_group(onceflow_broker: BrokerThread) -> None:
    kafka = pytest.importorskip("kafka")
    bootstrap = onceflow_broker.bootstrap
    create_topics(bootstrap, "kp", partitions=4)
    values = [f"v{i}" for i in range(40)]
    _produce(bootstrap, "kp", values, 4)
    got: list[str] = []
    owned: set[int] = set()
    committed: dict[int, int | None] = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    def consume_with_kafka_python() -> None:
        # kafka-python rejoins inside poll(), so it gets a thread of its own: blocked in
        # JoinGroup it must not keep the other member from rejoining.
        consumer = kafka.KafkaConsumer(
            "kp",
            bootstrap_servers=bootstrap,
            group_id="mixed",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=SESSION_MS,
            heartbeat_interval_ms=500,
        )
        try:
            while not stop.is_set():
                batches = consumer.poll(timeout_ms=100)
                for records in batches.values():
                    got.extend(r.value.decode() for r in records)
                if batches:
                    consumer.commit()
                owned.clear()
                owned.update(tp.partition for tp in consumer.assignment())
            for p in range(4):
                committed[p] = consumer.committed(kafka.TopicPartition("kp", p))
        except BaseException as exc:
            errors.append(exc)
        finally:
            consumer.close()

    thread = threading.Thread(target=consume_with_kafka_python)
    thread.start()
    other = _consumer(bootstrap, "mixed")
    try:
        other.subscribe(["kp"])
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            message = other.poll(0.1)
            if message is not None and not message.error():
                got.append(message.value().decode())
                other.commit(message=message, asynchronous=False)
            mine = {tp.partition for tp in other.assignment()}
            if len(got) >= len(values) and len(mine) == 2 and len(owned) == 2:
                break
    finally:
        stop.set()
        thread.join(30)
        other.close()
    assert not errors
    assert sorted(got) == sorted(values)
    assert owned | mine == {0, 1, 2, 3} and not owned & mine
    assert committed == {0: 10, 1: 10, 2: 10, 3: 10}


def test_commit_for_an_unknown_topic_is_refused_with_a_kafka_error(
    onceflow_broker: BrokerThread,
) -> None:
    consumer = _consumer(onceflow_broker.bootstrap, "lost")
    try:
        with pytest.raises(KafkaException) as raised:
            consumer.commit(offsets=[TopicPartition("no-such-topic", 0, 1)], asynchronous=False)
        assert "UNKNOWN_TOPIC_OR_PART" in str(raised.value) or "Unknown" in str(raised.value)
    finally:
        consumer.close()


def test_kcat_balanced_consumer_commits_its_offsets(onceflow_broker: BrokerThread) -> None:
    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.skip("kcat is not installed")
    bootstrap = onceflow_broker.bootstrap
    create_topics(bootstrap, "kc", partitions=2)
    _produce(bootstrap, "kc", [f"v{i}" for i in range(10)], 2)
    done = subprocess.run(
        [kcat, "-b", bootstrap, "-G", "kcat-group", "-c", "10", "-o", "beginning", "kc"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == sorted(f"v{i}" for i in range(10))
    admin = AdminClient({"bootstrap.servers": bootstrap})
    result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("kcat-group")])
    committed = {tp.partition: tp.offset for tp in result["kcat-group"].result(15).topic_partitions}
    assert committed == {0: 5, 1: 5}
