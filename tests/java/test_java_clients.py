"""Apache Kafka's Java client (kafka-clients 4.4.0) against ``onceflow broker`` as a real
process, and against Apache Kafka as the reference: the seed's three snippets, each
checked from the broker's side with confluent-kafka, and SIGKILLed where the snippet's
guarantee is at stake."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition

from onceflow.kafka_admin import create_topics

from .conftest import Target, read_topic
from .java_programs import JavaProgram

pytestmark = pytest.mark.java

Java = Callable[..., JavaProgram]
PARTITIONS = 3


def produce_input(broker: Target, java: Java, topic: str, count: int) -> None:
    create_topics(broker.bootstrap, topic, partitions=PARTITIONS)
    events = java(
        "IdempotentProducer", "--bootstrap", broker.bootstrap, "--topic", topic,
        "--count", str(count),
    ).finish()  # fmt: skip
    assert len([e for e in events if e["event"] == "acked"]) == count


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        wanted = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in consumer.committed(wanted, timeout=10)}
    finally:
        consumer.close()


def test_idempotent_producer_acks_are_where_the_records_are(
    target: Target, java: Java, topic: str
) -> None:
    count = 300
    create_topics(target.bootstrap, topic, partitions=PARTITIONS)
    events = java(
        "IdempotentProducer", "--bootstrap", target.bootstrap, "--topic", topic,
        "--count", str(count), "--prefix", "order",
    ).finish()  # fmt: skip
    acked = {e["key"]: (e["partition"], e["offset"]) for e in events if e["event"] == "acked"}
    assert len(acked) == count
    assert events[-1] == {"event": "done", "count": count, "failures": 0}

    stored = read_topic(target.bootstrap, topic)
    assert len(stored) == count, "every record exactly once in the log"
    for message in stored:
        key = message.key().decode()
        index = key.removeprefix("order-")
        assert acked[key] == (message.partition(), message.offset()), key
        assert message.value() == f"value-{index}".encode()
        assert message.headers() == [("seq", index.encode()), ("source", b"java")]
    # Keys hash to partitions (murmur2 in Java): all three partitions got records.
    assert {partition for partition, _ in acked.values()} == set(range(PARTITIONS))


def test_commit_after_processing_rereads_exactly_the_uncommitted(
    target: Target, java: Java, topic: str
) -> None:
    count, group = 120, f"{topic}-group"
    produce_input(target, java, topic, count)
    args = ["--bootstrap", target.bootstrap, "--topic", topic, "--group", group]

    first = java("CommitLoop", *args, "--pause-after", "50")
    first.wait_for("paused")
    first.kill()
    committed = committed_offsets(target.bootstrap, group, topic)
    reported: dict[int, int] = {}
    for event in first.named("committed"):
        reported.update({int(p): o for p, o in event["offsets"].items()})
    assert {p: o for p, o in committed.items() if o >= 0} == reported
    processed = {(e["partition"], e["offset"]) for e in first.named("processed")}
    uncommitted = {(p, o) for p, o in processed if o >= reported.get(p, 0)}
    assert uncommitted, "the kill came between processing and commit"

    second = java("CommitLoop", *args)
    events = second.finish()
    reread = [(e["partition"], e["offset"]) for e in events if e["event"] == "processed"]
    assert len(reread) == len(set(reread)), "nothing read twice by the restarted loop"
    expected_rest = {
        (m.partition(), m.offset())
        for m in read_topic(target.bootstrap, topic)
        if m.offset() >= reported.get(m.partition(), 0)
    }
    assert set(reread) == expected_rest
    assert uncommitted <= set(reread)
    assert not (processed - uncommitted) & set(reread), "committed records are not re-read"
    assert committed_offsets(target.bootstrap, group, topic) == {
        p: len([m for m in read_topic(target.bootstrap, topic) if m.partition() == p])
        for p in range(PARTITIONS)
    }


def txn_args(broker: Target, topic: str) -> list[str]:
    return [
        "--bootstrap", broker.bootstrap, "--input", topic, "--output", f"{topic}-out",
        "--group", f"{topic}-group", "--transactional-id", f"{topic}-txn",
    ]  # fmt: skip


def txn_topics(target: Target, java: Java, topic: str, count: int) -> None:
    """The transactional loop's input, with ``count`` records, and its empty output."""
    produce_input(target, java, topic, count)
    create_topics(target.bootstrap, f"{topic}-out", partitions=PARTITIONS)


def assert_each_input_once(broker: Target, topic: str, count: int) -> None:
    outputs = read_topic(broker.bootstrap, f"{topic}-out", "read_committed")
    sources = Counter(dict(m.headers())["input"].decode() for m in outputs)
    duplicated = {source: n for source, n in sources.items() if n > 1}
    assert not duplicated, f"inputs in the committed output more than once: {duplicated}"
    inputs = {f"{m.partition()}:{m.offset()}": m for m in read_topic(broker.bootstrap, topic)}
    assert set(sources) == set(inputs), "every input in the committed output"
    for message in outputs:
        source = inputs[dict(message.headers())["input"].decode()]
        assert message.key() == source.key()
        assert message.value() == b"paid:" + source.value()
    assert len(outputs) == count


def test_transactional_loop_killed_mid_transaction_outputs_each_input_once(
    target: Target, java: Java, topic: str
) -> None:
    count = 100
    txn_topics(target, java, topic, count)

    first = java("TransactionalLoop", *txn_args(target, topic), "--pause-after", "45")
    first.wait_for("paused")
    first.kill()
    assert first.named("committed"), "some transactions committed before the kill"
    # The killed transaction's records are in the log but not readable read_committed.
    assert len(read_topic(target.bootstrap, f"{topic}-out")) >= 45

    second = java("TransactionalLoop", *txn_args(target, topic))
    second.finish()
    assert not second.named("fenced") and not second.named("aborted")
    assert_each_input_once(target, topic, count)


def test_second_instance_with_the_same_transactional_id_fences_the_first(
    target: Target, java: Java, topic: str
) -> None:
    count = 60
    txn_topics(target, java, topic, count)
    # A short poll interval: the paused zombie leaves the group soon, so its rival can
    # take every partition.
    args = [*txn_args(target, topic), "--max-poll-interval-ms", "3000"]

    zombie = java("TransactionalLoop", *args, "--pause-after", "20")
    zombie.wait_for("paused")
    rival = java("TransactionalLoop", *args)
    rival.finish()
    assert not rival.named("fenced")

    zombie.resume()
    zombie.wait_for("fenced")
    # The zombie rebuilt its producer and found the group's offsets at the end.
    events = zombie.finish()
    assert [e["event"] for e in events].count("initialized") == 2
    assert_each_input_once(target, topic, count)
