"""Admin APIs through confluent-kafka's AdminClient against a real broker process:
topic configs (create, describe, alter both ways, durable), topic deletion, partition
creation, DeleteRecords, DescribeCluster, and the configs that change the log
(max.message.bytes, message.timestamp.type)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
)
from interop_support import (
    confluent_consumer,
    consume_confluent,
    make_records,
    produce_confluent,
)
from kio.schema.errors import ErrorCode
from wire import WireClient, request_module

from onceflow.testing import BrokerProcess

TIMEOUT = 15


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def _create(admin: AdminClient, topic: NewTopic) -> None:
    admin.create_topics([topic], request_timeout=TIMEOUT)[topic.topic].result(TIMEOUT)


def _error_of(future: Any) -> KafkaError:
    with pytest.raises(KafkaException) as info:
        future.result(TIMEOUT)
    return info.value.args[0]


def _describe(admin: AdminClient, topic: str) -> dict[str, Any]:
    resource = ConfigResource("topic", topic)
    return admin.describe_configs([resource], request_timeout=TIMEOUT)[resource].result(TIMEOUT)


def _overrides(admin: AdminClient, topic: str) -> dict[str, str]:
    return {
        name: entry.value
        for name, entry in _describe(admin, topic).items()
        if entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    }


@pytest.fixture
def broker(onceflow_broker_process_factory: Callable[..., BrokerProcess]) -> BrokerProcess:
    return onceflow_broker_process_factory(extra_args=("--segment-bytes", "1048576"))


def test_topic_configs_are_validated_described_altered_and_durable(broker: BrokerProcess) -> None:
    admin = _admin(broker.bootstrap)
    _create(
        admin, NewTopic("cfg", 1, config={"retention.ms": "3600000", "cleanup.policy": "compact"})
    )

    bad = admin.create_topics(
        [
            NewTopic("bad-key", 1, config={"retention.msec": "1"}),
            NewTopic("bad-value", 1, config={"retention.ms": "soon"}),
            NewTopic("bad-choice", 1, config={"cleanup.policy": "shred"}),
        ],
        request_timeout=TIMEOUT,
    )
    for name, key in (
        ("bad-key", "retention.msec"),
        ("bad-value", "retention.ms"),
        ("bad-choice", "cleanup.policy"),
    ):
        error = _error_of(bad[name])
        assert error.code() == KafkaError.INVALID_CONFIG, error
        assert key in error.str(), error
    assert not {"bad-key", "bad-value", "bad-choice"} & set(
        admin.list_topics(timeout=TIMEOUT).topics
    )

    described = _describe(admin, "cfg")
    assert described["retention.ms"].value == "3600000"
    assert described["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert described["max.message.bytes"].value == "1048588"
    assert described["max.message.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    # The broker's --segment-bytes is the topic default, reported as a static broker config.
    assert described["segment.bytes"].value == "1048576"
    assert described["segment.bytes"].source == ConfigSource.STATIC_BROKER_CONFIG.value

    resource = ConfigResource(
        "topic",
        "cfg",
        incremental_configs=[
            ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
            ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.APPEND),
            ConfigEntry("segment.ms", "60000", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(TIMEOUT)
    assert _overrides(admin, "cfg") == {"cleanup.policy": "compact,delete", "segment.ms": "60000"}
    assert _describe(admin, "cfg")["retention.ms"].value == "604800000"

    resource = ConfigResource(
        "topic",
        "cfg",
        incremental_configs=[
            ConfigEntry(
                "cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SUBTRACT
            )
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(TIMEOUT)
    assert _overrides(admin, "cfg")["cleanup.policy"] == "delete"

    rejected = ConfigResource(
        "topic",
        "cfg",
        incremental_configs=[
            ConfigEntry(
                "min.cleanable.dirty.ratio", "2", incremental_operation=AlterConfigOpType.SET
            )
        ],
    )
    error = _error_of(admin.incremental_alter_configs([rejected])[rejected])
    assert error.code() == KafkaError.INVALID_CONFIG and "min.cleanable.dirty.ratio" in error.str()
    assert "min.cleanable.dirty.ratio" not in _overrides(admin, "cfg")

    # Legacy AlterConfigs replaces the whole set of overrides.
    full = ConfigResource("topic", "cfg", set_config={"retention.bytes": "1000000"})
    with pytest.warns(DeprecationWarning):
        admin.alter_configs([full])[full].result(TIMEOUT)
    assert _overrides(admin, "cfg") == {"retention.bytes": "1000000"}

    missing = ConfigResource("topic", "no-such-topic")
    error = _error_of(admin.describe_configs([missing])[missing])
    assert error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART

    node = ConfigResource("broker", "0")
    broker_configs = admin.describe_configs([node])[node].result(TIMEOUT)
    assert broker_configs["log.segment.bytes"].value == "1048576"
    assert broker_configs["log.retention.ms"].value == "604800000"

    broker.stop()
    broker.start()
    admin = _admin(broker.bootstrap)
    assert _overrides(admin, "cfg") == {"retention.bytes": "1000000"}


def test_delete_topic_then_recreate_starts_empty(broker: BrokerProcess) -> None:
    admin = _admin(broker.bootstrap)
    _create(admin, NewTopic("doomed", 2))
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    produce_confluent(producer, "doomed", make_records(50, edge_cases=False))

    admin.delete_topics(["doomed"], request_timeout=TIMEOUT)["doomed"].result(TIMEOUT)
    assert "doomed" not in admin.list_topics(timeout=TIMEOUT).topics
    assert not list(broker.data_dir.glob("doomed-*")), "partition directories left behind"
    error = _error_of(admin.delete_topics(["doomed"], request_timeout=TIMEOUT)["doomed"])
    assert error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART

    _create(admin, NewTopic("doomed", 1))
    consumer = confluent_consumer(broker.bootstrap)
    try:
        assert consumer.get_watermark_offsets(TopicPartition("doomed", 0), timeout=TIMEOUT) == (
            0,
            0,
        )
    finally:
        consumer.close()

    # The deletion is durable.
    admin.delete_topics(["doomed"], request_timeout=TIMEOUT)["doomed"].result(TIMEOUT)
    broker.stop()
    broker.start()
    assert "doomed" not in _admin(broker.bootstrap).list_topics(timeout=TIMEOUT).topics


def test_create_partitions(broker: BrokerProcess) -> None:
    admin = _admin(broker.bootstrap)
    _create(admin, NewTopic("grow", 1))
    admin.create_partitions([NewPartitions("grow", 3)])["grow"].result(TIMEOUT)
    assert len(admin.list_topics(timeout=TIMEOUT).topics["grow"].partitions) == 3

    error = _error_of(admin.create_partitions([NewPartitions("grow", 2)])["grow"])
    assert error.code() == KafkaError.INVALID_PARTITIONS

    producer = Producer({"bootstrap.servers": broker.bootstrap})
    records = make_records(10, edge_cases=False)
    produce_confluent(producer, "grow", records, partition=2)
    consumer = confluent_consumer(broker.bootstrap)
    try:
        consumer.assign([TopicPartition("grow", 2, 0)])
        got = consume_confluent(consumer, 10)
        assert [m.value() for m in got] == [r.value for r in records]
    finally:
        consumer.close()


def test_delete_records_moves_log_start_durably(broker: BrokerProcess) -> None:
    admin = _admin(broker.bootstrap)
    _create(admin, NewTopic("trim", 1))
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    records = make_records(100, edge_cases=False)
    produce_confluent(producer, "trim", records)

    deleted = admin.delete_records([TopicPartition("trim", 0, 40)], request_timeout=TIMEOUT)
    assert next(iter(deleted.values())).result(TIMEOUT).low_watermark == 40
    too_far = admin.delete_records([TopicPartition("trim", 0, 1000)], request_timeout=TIMEOUT)
    error = _error_of(next(iter(too_far.values())))
    assert error.code() == KafkaError.OFFSET_OUT_OF_RANGE

    broker.stop()
    broker.start()
    consumer = confluent_consumer(broker.bootstrap, **{"auto.offset.reset": "earliest"})
    try:
        tp = TopicPartition("trim", 0)
        assert consumer.get_watermark_offsets(tp, timeout=TIMEOUT) == (40, 100)
        # Asking for a deleted offset is out of range: the consumer resets to the start.
        consumer.assign([TopicPartition("trim", 0, 5)])
        got = consume_confluent(consumer, 60)
        assert [m.offset() for m in got] == list(range(40, 100))
        assert [m.value() for m in got] == [r.value for r in records[40:]]
    finally:
        consumer.close()


def test_describe_cluster(broker: BrokerProcess) -> None:
    admin = _admin(broker.bootstrap)  # kept referenced: the future dies with its client
    cluster = admin.describe_cluster(request_timeout=TIMEOUT).result(TIMEOUT)
    assert cluster.cluster_id == "onceflow-embedded"
    assert [(n.id, n.host, n.port) for n in cluster.nodes] == [(0, "127.0.0.1", broker.port)]
    assert cluster.controller.id == 0


def test_max_message_bytes_and_log_append_time(broker: BrokerProcess) -> None:
    admin = _admin(broker.bootstrap)
    _create(
        admin,
        NewTopic(
            "stamped",
            1,
            config={"max.message.bytes": "2000", "message.timestamp.type": "LogAppendTime"},
        ),
    )
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    errors: list[KafkaError] = []
    producer.produce(
        "stamped", value=b"x" * 5000, partition=0, on_delivery=lambda e, m: errors.append(e)
    )
    assert producer.flush(TIMEOUT) == 0
    assert errors and errors[0] is not None
    assert errors[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, errors

    before = int(time.time() * 1000)
    reports = produce_confluent(producer, "stamped", make_records(5, edge_cases=False))
    # The produce response carries the broker's append time.
    assert all(r.timestamp()[0] == 2 and r.timestamp()[1] >= before - 1000 for r in reports)
    consumer = confluent_consumer(broker.bootstrap, **{"check.crcs": True})
    try:
        consumer.assign([TopicPartition("stamped", 0, 0)])
        got = consume_confluent(consumer, 5)
        for message in got:
            kind, stamp = message.timestamp()
            assert kind == 2, "expected TIMESTAMP_LOG_APPEND_TIME"
            assert before - 1000 <= stamp <= int(time.time() * 1000) + 1000
    finally:
        consumer.close()


def test_describe_producers_and_transactions(broker: BrokerProcess) -> None:
    """confluent-kafka's Python AdminClient has no call for these APIs: use the wire."""
    admin = _admin(broker.bootstrap)
    _create(admin, NewTopic("txn-admin", 1))
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "admin-txn"})
    producer.init_transactions(TIMEOUT)
    producer.begin_transaction()
    producer.produce("txn-admin", value=b"open", partition=0)
    assert producer.flush(TIMEOUT) == 0

    list_v1 = request_module(66, 1)
    describe_v0 = request_module(65, 0)
    producers_v0 = request_module(61, 0)
    with WireClient.connect(broker.bootstrap) as wire:
        listed = wire.request(
            list_v1.ListTransactionsRequest(
                state_filters=("Ongoing",), producer_id_filters=(), duration_filter=-1
            )
        )
        assert [t.transactional_id for t in listed.transaction_states] == ["admin-txn"]
        described = wire.request(
            describe_v0.DescribeTransactionsRequest(transactional_ids=("admin-txn", "nobody"))
        )
        known, unknown = described.transaction_states
        assert known.transaction_state == "Ongoing"
        assert [(t.topic, list(t.partitions)) for t in known.topics] == [("txn-admin", [0])]
        assert unknown.error_code == ErrorCode.transactional_id_not_found
        states = wire.request(
            producers_v0.DescribeProducersRequest(
                topics=(producers_v0.TopicRequest(name="txn-admin", partition_indexes=(0,)),)
            )
        )
        (active,) = states.topics[0].partitions[0].active_producers
        assert active.producer_id == known.producer_id
        assert active.current_txn_start_offset == 0

        producer.commit_transaction(TIMEOUT)

        def states_now() -> dict[str, str]:
            listed = wire.request(
                list_v1.ListTransactionsRequest(
                    state_filters=(), producer_id_filters=(), duration_filter=-1
                )
            )
            return {t.transactional_id: t.transaction_state for t in listed.transaction_states}

        # The commit is answered once decided (PrepareCommit); its markers follow.
        deadline = time.monotonic() + TIMEOUT
        while (states := states_now()) == {"admin-txn": "PrepareCommit"}:
            assert time.monotonic() < deadline, "the commit's markers never completed"
        assert states == {"admin-txn": "CompleteCommit"}
