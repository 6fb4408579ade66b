"""Operator-facing broker APIs over TCP against a real broker process: WriteTxnMarkers
(abort or commit a transaction a partition shows open), DescribeLogDirs,
ListTransactions filters, DescribeProducers, the advertised host, the client host
DescribeGroups reports, and Produce refusing unknown topics."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from group_wire import GroupClient
from interop_support import confluent_consumer, consume_confluent
from kio.schema.errors import ErrorCode
from wire import WireClient, request_module, values_batch

from onceflow.broker.protocol import build
from onceflow.kafka_admin import create_topics
from onceflow.testing import BrokerProcess

TIMEOUT = 15.0
WRITE_TXN_MARKERS, DESCRIBE_LOG_DIRS, DESCRIBE_CLUSTER = 27, 35, 60
DESCRIBE_PRODUCERS, LIST_TRANSACTIONS, FIND_COORDINATOR = 61, 66, 10
READ_COMMITTED = 1


def open_transaction(
    bootstrap: str, topic: str, transactional_id: str, values: list[bytes], timestamp: int = 0
) -> Producer:
    """A transactional producer whose transaction holds ``values`` and stays open."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id,
            "transaction.timeout.ms": 600_000,
        }
    )
    producer.init_transactions(TIMEOUT)
    producer.begin_transaction()
    for value in values:
        producer.produce(topic, value=value, partition=0, timestamp=timestamp)
    assert producer.flush(TIMEOUT) == 0
    return producer


def producer_state(wire: WireClient, topic: str, producer_id: int) -> Any:
    m = request_module(DESCRIBE_PRODUCERS, 0)
    answer = wire.request(
        m.DescribeProducersRequest(topics=(m.TopicRequest(name=topic, partition_indexes=(0,)),))
    )
    (part,) = answer.topics[0].partitions
    assert part.error_code == ErrorCode.none
    (state,) = [s for s in part.active_producers if s.producer_id == producer_id]
    return state


def write_marker(
    wire: WireClient,
    topic: str,
    partition: int,
    producer_id: int,
    epoch: int,
    *,
    commit: bool = False,
    coordinator_epoch: int = 0,
    version: int = 2,
) -> ErrorCode:
    m = request_module(WRITE_TXN_MARKERS, version)
    answer = wire.request(
        m.WriteTxnMarkersRequest(
            markers=(
                build(
                    m.WritableTxnMarker,
                    producer_id=producer_id,
                    producer_epoch=epoch,
                    transaction_result=commit,
                    topics=(m.WritableTxnMarkerTopic(name=topic, partition_indexes=(partition,)),),
                    coordinator_epoch=coordinator_epoch,
                ),
            )
        )
    )
    (marker,) = answer.markers
    assert marker.producer_id == producer_id
    ((name, (result,)),) = [(t.name, t.partitions) for t in marker.topics]
    assert (name, result.partition_index) == (topic, partition)
    return ErrorCode(result.error_code)


def stable_offset(wire: WireClient, topic: str) -> int:
    m = request_module(2, 7)
    answer = wire.request(
        build(
            m.ListOffsetsRequest,
            replica_id=-1,
            isolation_level=READ_COMMITTED,
            topics=(
                build(
                    m.ListOffsetsTopic,
                    name=topic,
                    partitions=(build(m.ListOffsetsPartition, partition_index=0, timestamp=-1),),
                ),
            ),
        )
    )
    return answer.topics[0].partitions[0].offset


# -- WriteTxnMarkers ---------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_write_txn_markers_abort_and_commit(
    shared_broker: BrokerProcess, topic: str, version: int
) -> None:
    bootstrap = shared_broker.bootstrap
    create_topics(bootstrap, topic)
    # Kept referenced: their transactions stay open until the markers below end them.
    txn_a = open_transaction(bootstrap, topic, f"{topic}-a", [b"a0", b"a1"])
    txn_b = open_transaction(bootstrap, topic, f"{topic}-b", [b"b0"])
    with WireClient.connect(bootstrap) as wire:
        ids = {}
        for name in ("a", "b"):
            listed = wire.request(
                build(
                    request_module(LIST_TRANSACTIONS, 2).ListTransactionsRequest,
                    transactional_id_pattern=f"{topic}-{name}",
                )
            )
            (txn,) = listed.transaction_states
            ids[name] = txn.producer_id
        a = producer_state(wire, topic, ids["a"])
        assert (a.current_txn_start_offset, wire.latest_offset(topic, 0)) == (0, 3)
        assert stable_offset(wire, topic) == 0

        # Refused: a fenced coordinator epoch, an older producer epoch, a missing partition.
        assert (
            write_marker(wire, topic, 0, ids["a"], a.producer_epoch, coordinator_epoch=-1,
                         version=version)
            == ErrorCode.transaction_coordinator_fenced
        )  # fmt: skip
        assert (
            write_marker(wire, topic, 0, ids["a"], a.producer_epoch - 1, version=version)
            == ErrorCode.invalid_producer_epoch
        )
        assert (
            write_marker(wire, topic, 5, ids["a"], a.producer_epoch, version=version)
            == ErrorCode.unknown_topic_or_partition
        )
        assert stable_offset(wire, topic) == 0, "a refused marker must not end the transaction"

        assert write_marker(wire, topic, 0, ids["a"], a.producer_epoch, version=version) == (
            ErrorCode.none
        )
        # b (first offset 2) still holds the LSO; the abort marker took offset 3.
        assert (stable_offset(wire, topic), wire.latest_offset(topic, 0)) == (2, 4)
        assert producer_state(wire, topic, ids["a"]).current_txn_start_offset == -1
        # Nothing open any more: answered, but no second marker.
        assert write_marker(wire, topic, 0, ids["a"], a.producer_epoch, version=version) == (
            ErrorCode.none
        )
        assert wire.latest_offset(topic, 0) == 4

        b = producer_state(wire, topic, ids["b"])
        assert write_marker(
            wire, topic, 0, ids["b"], b.producer_epoch, commit=True, version=version
        ) == (ErrorCode.none)
        assert stable_offset(wire, topic) == wire.latest_offset(topic, 0) == 5

    consumer = confluent_consumer(bootstrap, **{"isolation.level": "read_committed"})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        assert [m.value() for m in consume_confluent(consumer, 1)] == [b"b0"]
    finally:
        consumer.close()
    assert "Traceback" not in shared_broker.log_path.read_text()
    del txn_a, txn_b


# -- ListTransactions and DescribeProducers ----------------------------------------


def test_list_transactions_filters(shared_broker: BrokerProcess, topic: str) -> None:
    bootstrap = shared_broker.bootstrap
    create_topics(bootstrap, topic)
    txn = open_transaction(bootstrap, topic, f"{topic}-x1", [b"x"])
    m = request_module(LIST_TRANSACTIONS, 2)

    def listed(**filters: Any) -> tuple[ErrorCode, set[str]]:
        request = build(
            m.ListTransactionsRequest,
            **{"state_filters": (), "producer_id_filters": (), "duration_filter": -1, **filters},
        )
        answer = wire.request(request)
        ours = {
            t.transactional_id for t in answer.transaction_states if topic in t.transactional_id
        }
        return ErrorCode(answer.error_code), ours

    with WireClient.connect(bootstrap) as wire:
        assert listed(transactional_id_pattern=f"{topic}-x.") == (ErrorCode.none, {f"{topic}-x1"})
        # The whole id must match (Matcher.matches in Kafka's Java): a prefix is not enough.
        assert listed(transactional_id_pattern=f"{topic}-x") == (ErrorCode.none, set())
        assert listed(transactional_id_pattern="(") == (
            ErrorCode.invalid_regular_expression,
            set(),
        )
        assert listed(duration_filter=0, state_filters=("Ongoing",))[1] == {f"{topic}-x1"}
        assert listed(duration_filter=600_000, state_filters=("Ongoing",))[1] == set()
        assert listed(state_filters=("CompleteCommit",))[1] == set()
    del txn


def test_describe_producers_reports_the_last_timestamp(
    shared_broker: BrokerProcess, topic: str
) -> None:
    bootstrap = shared_broker.bootstrap
    create_topics(bootstrap, topic)
    stamp = int(time.time() * 1000) - 5_000
    txn = open_transaction(bootstrap, topic, f"{topic}-t", [b"x"], timestamp=stamp)
    with WireClient.connect(bootstrap) as wire:
        listed = wire.request(
            build(
                request_module(LIST_TRANSACTIONS, 2).ListTransactionsRequest,
                transactional_id_pattern=f"{topic}-t",
            )
        )
        (txn,) = listed.transaction_states
        state = producer_state(wire, topic, txn.producer_id)
        assert state.last_timestamp == stamp
        assert (state.current_txn_start_offset, state.coordinator_epoch) == (0, 0)
    del txn


# -- DescribeLogDirs ---------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 4])
def test_describe_log_dirs_reports_partition_sizes(
    shared_broker: BrokerProcess, topic: str, version: int
) -> None:
    bootstrap = shared_broker.bootstrap
    create_topics(bootstrap, topic, partitions=2)
    m = request_module(DESCRIBE_LOG_DIRS, version)
    with WireClient.connect(bootstrap) as wire:
        for count in (3, 40):
            assert wire.produce(topic, 0, values_batch([b"v" * 100] * count)).error_code == (
                ErrorCode.none
            )
        asked = wire.request(
            m.DescribeLogDirsRequest(
                topics=(
                    m.DescribableLogDirTopic(topic=topic, partitions=(0, 1, 9)),
                    m.DescribableLogDirTopic(topic="no-such-topic", partitions=(0,)),
                )
            )
        )
        everything = wire.request(m.DescribeLogDirsRequest(topics=None))
    (result,) = asked.results
    assert result.error_code == ErrorCode.none
    assert result.log_dir == str(shared_broker.data_dir.resolve())
    (described,) = result.topics
    sizes = {p.partition_index: p.partition_size for p in described.partitions}
    on_disk = sum(f.stat().st_size for f in (shared_broker.data_dir / f"{topic}-0").glob("*.log"))
    assert sizes == {0: on_disk, 1: 0}
    assert on_disk > 43 * 100
    assert topic in {t.name for t in everything.results[0].topics}
    if version >= 4:
        assert result.total_bytes >= result.usable_bytes > 0


# -- the advertised host -----------------------------------------------------------


@pytest.mark.parametrize(
    ("bind", "client", "args", "advertised"),
    [
        ("0.0.0.0", "127.0.0.1", (), "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1", ("--advertised-host", "localhost"), "localhost"),
        # asyncio makes a "::" listener IPv6-only: IPv4 loopback would be unreachable.
        ("::", "[::1]", (), "::1"),
    ],
)
def test_advertised_host(
    tmp_path: Path, bind: str, client: str, args: tuple[str, ...], advertised: str
) -> None:
    broker = BrokerProcess(tmp_path / "data", extra_args=("--host", bind, *args))
    broker.host = client  # where this test connects; the last --host is what binds
    with broker:
        check_advertised(broker, advertised)


def check_advertised(broker: BrokerProcess, advertised: str) -> None:
    with WireClient.connect(broker.bootstrap) as wire:
        (node,) = wire.metadata([]).brokers
        assert (node.host, node.port) == (advertised, broker.port)
        for key_type in (0, 1):
            found = wire.request(
                build(
                    request_module(FIND_COORDINATOR, 2).FindCoordinatorRequest,
                    key="anything",
                    key_type=key_type,
                )
            )
            assert (found.host, found.port) == (advertised, broker.port)
        for version in (0, 2):
            cluster = wire.request(
                build(
                    request_module(DESCRIBE_CLUSTER, version).DescribeClusterRequest,
                    include_cluster_authorized_operations=False,
                    include_fenced_brokers=False,
                )
            )
            assert [(b.host, b.port) for b in cluster.brokers] == [(advertised, broker.port)]
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    described = admin.describe_cluster(request_timeout=TIMEOUT).result(TIMEOUT)
    assert [n.host for n in described.nodes] == [advertised]


# -- DescribeGroups: the member's own host -----------------------------------------


def test_describe_groups_reports_the_client_host(shared_broker: BrokerProcess, topic: str) -> None:
    """A member connecting from 127.0.0.7 is described with that host, not the broker's."""
    with GroupClient(shared_broker.bootstrap, f"{topic}-group") as member:
        member.wire.sock.close()
        member.wire.sock = socket.create_connection(
            ("127.0.0.1", shared_broker.port), timeout=TIMEOUT, source_address=("127.0.0.7", 0)
        )
        assert member.join().error_code == ErrorCode.none
        assert member.sync({member.member_id: b""}).error_code == ErrorCode.none
        with GroupClient(shared_broker.bootstrap, f"{topic}-group") as admin:
            (group,) = admin.describe()
    (described,) = group.members
    assert described.member_id == member.member_id
    assert described.client_host == "/127.0.0.7"


# -- Produce never creates a topic -------------------------------------------------


def test_produce_to_an_unknown_topic_is_refused(shared_broker: BrokerProcess, topic: str) -> None:
    m = request_module(3, 12)
    with WireClient.connect(shared_broker.bootstrap) as wire:
        answer = wire.produce(topic, 0, values_batch([b"nowhere"]))
        assert answer.error_code == ErrorCode.unknown_topic_or_partition
        (entry,) = wire.request(
            build(
                m.MetadataRequest,
                topics=(build(m.MetadataRequestTopic, name=topic, topic_id=None),),
                allow_auto_topic_creation=False,
                include_topic_authorized_operations=False,
            )
        ).topics
        assert entry.error_code == ErrorCode.unknown_topic_or_partition, "produce created it"
        # Metadata still creates it when allowed; then Produce appends.
        assert wire.ensure_topic(topic) == 1
        assert wire.produce(topic, 0, values_batch([b"somewhere"])).error_code == ErrorCode.none


def test_no_auto_create_switches_metadata_creation_off(
    onceflow_broker_process_factory: Callable[..., BrokerProcess],
) -> None:
    broker = onceflow_broker_process_factory(extra_args=("--no-auto-create",))
    with WireClient.connect(broker.bootstrap) as wire:
        (entry,) = wire.metadata(["never-made"]).topics
        assert entry.error_code == ErrorCode.unknown_topic_or_partition
        assert wire.produce("never-made", 0, values_batch([b"x"])).error_code == (
            ErrorCode.unknown_topic_or_partition
        )
