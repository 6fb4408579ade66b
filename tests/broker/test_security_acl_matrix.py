"""Every API that touches a topic, group, transactional id or the cluster answers a
principal without ACLs Kafka's *_AUTHORIZATION_FAILED code, and a super user not."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kio.schema.errors import ErrorCode
from security_support import PASSWORD, SecureBroker, add_user, log_in, start_secure_broker
from wire import WireClient

from onceflow.admin.wire import request_module

TOPIC, GROUP, TXN = "guarded", "guarded-group", "guarded-txn"
T, G, X, C = (
    ErrorCode.topic_authorization_failed,
    ErrorCode.group_authorization_failed,
    ErrorCode.transactional_id_authorization_failed,
    ErrorCode.cluster_authorization_failed,
)
AUTHORIZATION_CODES = {T, G, X, C}
SECOND = datetime.timedelta(seconds=1)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    root = tmp_path_factory.mktemp("acl-matrix")
    for user in ("admin", "bob"):
        add_user(root / "data", user, PASSWORD)
    broker = start_secure_broker(
        root, listeners=("SASL_PLAINTEXT://127.0.0.1:0",), acls_enabled=True,
        super_users=("User:admin",),
    )  # fmt: skip
    with WireClient(*broker.address("SASL_PLAINTEXT")) as client:
        log_in(client, "admin")
        client.ensure_topic(TOPIC)
    yield broker
    broker.thread.stop()


def _m(key: int, version: int) -> Any:
    return request_module(key, version)


def _partition_codes(response: Any, topics: str, partitions: str, field: str) -> list[Any]:
    return [getattr(p, field) for t in getattr(response, topics) for p in getattr(t, partitions)]


# (API, request, the error codes of the answer, the code expected without ACLs)
CASES: list[tuple[str, Callable[[], Any], Callable[[Any], list[Any]], ErrorCode]] = [
    ("Fetch", lambda: _m(1, 4).FetchRequest(
        max_wait=datetime.timedelta(0), min_bytes=0, topics=(_m(1, 4).FetchTopic(
            topic=TOPIC, partitions=(_m(1, 4).FetchPartition(
                partition=0, fetch_offset=0, partition_max_bytes=1024),)),)),
     lambda r: _partition_codes(r, "responses", "partitions", "error_code"), T),
    ("ListOffsets", lambda: _m(2, 1).ListOffsetsRequest(replica_id=-1, topics=(
        _m(2, 1).ListOffsetsTopic(name=TOPIC, partitions=(
            _m(2, 1).ListOffsetsPartition(partition_index=0, timestamp=-1),)),)),
     lambda r: _partition_codes(r, "topics", "partitions", "error_code"), T),
    ("OffsetCommit", lambda: _m(8, 2).OffsetCommitRequest(
        group_id=GROUP, member_id="", topics=(_m(8, 2).OffsetCommitRequestTopic(
            name=TOPIC, partitions=(_m(8, 2).OffsetCommitRequestPartition(
                partition_index=0, committed_offset=0, committed_metadata=None),)),)),
     lambda r: _partition_codes(r, "topics", "partitions", "error_code"), G),
    ("OffsetFetch", lambda: _m(9, 1).OffsetFetchRequest(group_id=GROUP, topics=(
        _m(9, 1).OffsetFetchRequestTopic(name=TOPIC, partition_indexes=(0,)),)),
     lambda r: _partition_codes(r, "topics", "partitions", "error_code"), G),
    ("FindCoordinator group", lambda: _m(10, 1).FindCoordinatorRequest(key=GROUP, key_type=0),
     lambda r: [r.error_code], G),
    ("FindCoordinator txn", lambda: _m(10, 1).FindCoordinatorRequest(key=TXN, key_type=1),
     lambda r: [r.error_code], X),
    ("JoinGroup", lambda: _m(11, 0).JoinGroupRequest(
        group_id=GROUP, session_timeout=datetime.timedelta(seconds=10), member_id="",
        protocol_type="consumer", protocols=(
            _m(11, 0).JoinGroupRequestProtocol(name="range", metadata=b""),)),
     lambda r: [r.error_code], G),
    ("Heartbeat", lambda: _m(12, 0).HeartbeatRequest(
        group_id=GROUP, generation_id=1, member_id="m"), lambda r: [r.error_code], G),
    ("DescribeGroups", lambda: _m(15, 0).DescribeGroupsRequest(groups=(GROUP,)),
     lambda r: [g.error_code for g in r.groups], G),
    ("CreateTopics", lambda: _m(19, 2).CreateTopicsRequest(topics=(_m(19, 2).CreatableTopic(
        name="guarded-new", num_partitions=1, replication_factor=1, assignments=(),
        configs=()),), timeout=SECOND, validate_only=True),
     lambda r: [t.error_code for t in r.topics], T),
    ("DeleteTopics", lambda: _m(20, 1).DeleteTopicsRequest(topic_names=("guarded-absent",),
                                                          timeout=SECOND),
     lambda r: [t.error_code for t in r.responses], T),
    ("DeleteRecords", lambda: _m(21, 0).DeleteRecordsRequest(topics=(
        _m(21, 0).DeleteRecordsTopic(name=TOPIC, partitions=(
            _m(21, 0).DeleteRecordsPartition(partition_index=0, offset=0),)),), timeout=SECOND),
     lambda r: _partition_codes(r, "topics", "partitions", "error_code"), T),
    ("CreatePartitions", lambda: _m(37, 0).CreatePartitionsRequest(topics=(
        _m(37, 0).CreatePartitionsTopic(name=TOPIC, count=1, assignments=None),),
        timeout=SECOND, validate_only=True),
     lambda r: [t.error_code for t in r.results], T),
    ("DescribeConfigs topic", lambda: _m(32, 1).DescribeConfigsRequest(resources=(
        _m(32, 1).DescribeConfigsResource(resource_type=2, resource_name=TOPIC,
                                          configuration_keys=None),)),
     lambda r: [x.error_code for x in r.results], T),
    ("DescribeConfigs broker", lambda: _m(32, 1).DescribeConfigsRequest(resources=(
        _m(32, 1).DescribeConfigsResource(resource_type=4, resource_name="0",
                                          configuration_keys=None),)),
     lambda r: [x.error_code for x in r.results], C),
    ("IncrementalAlterConfigs", lambda: _m(44, 0).IncrementalAlterConfigsRequest(resources=(
        _m(44, 0).AlterConfigsResource(resource_type=2, resource_name=TOPIC, configs=(
            _m(44, 0).AlterableConfig(name="retention.ms", config_operation=0,
                                      value="1000"),)),), validate_only=True),
     lambda r: [x.error_code for x in r.responses], T),
    ("AddPartitionsToTxn", lambda: _m(24, 0).AddPartitionsToTxnRequest(
        v3_and_below_transactional_id=TXN, v3_and_below_producer_id=1,
        v3_and_below_producer_epoch=0, v3_and_below_topics=(
            _m(24, 0).AddPartitionsToTxnTopic(name=TOPIC, partitions=(0,)),)),
     lambda r: _partition_codes(r, "results_by_topic_v3_and_below", "results_by_partition",
                                "partition_error_code"), X),
    ("AddOffsetsToTxn", lambda: _m(25, 0).AddOffsetsToTxnRequest(
        transactional_id=TXN, producer_id=1, producer_epoch=0, group_id=GROUP),
     lambda r: [r.error_code], X),
    ("EndTxn", lambda: _m(26, 0).EndTxnRequest(
        transactional_id=TXN, producer_id=1, producer_epoch=0, committed=True),
     lambda r: [r.error_code], X),
    ("TxnOffsetCommit", lambda: _m(28, 0).TxnOffsetCommitRequest(
        transactional_id=TXN, group_id=GROUP, producer_id=1, producer_epoch=0, topics=(
            _m(28, 0).TxnOffsetCommitRequestTopic(name=TOPIC, partitions=(
                _m(28, 0).TxnOffsetCommitRequestPartition(
                    partition_index=0, committed_offset=0, committed_metadata=None),)),)),
     lambda r: _partition_codes(r, "topics", "partitions", "error_code"), X),
    ("DescribeProducers", lambda: _m(61, 0).DescribeProducersRequest(topics=(
        _m(61, 0).TopicRequest(name=TOPIC, partition_indexes=(0,)),)),
     lambda r: _partition_codes(r, "topics", "partitions", "error_code"), T),
    ("DescribeTransactions", lambda: _m(65, 0).DescribeTransactionsRequest(
        transactional_ids=(TXN,)),
     lambda r: [s.error_code for s in r.transaction_states], X),
    ("WriteTxnMarkers", lambda: _m(27, 1).WriteTxnMarkersRequest(markers=(
        _m(27, 1).WritableTxnMarker(producer_id=1, producer_epoch=0, transaction_result=False,
                                    topics=(_m(27, 1).WritableTxnMarkerTopic(
                                        name=TOPIC, partition_indexes=(0,)),),
                                    coordinator_epoch=0),)),
     lambda r: _partition_codes(r.markers[0], "topics", "partitions", "error_code"), C),
]  # fmt: skip


@pytest.mark.parametrize(("api", "request_", "codes", "expected"), CASES, ids=[c[0] for c in CASES])
def test_refused_without_acls_served_for_super_users(
    secure: SecureBroker, api: str, request_: Any, codes: Any, expected: ErrorCode
) -> None:
    with WireClient(*secure.address("SASL_PLAINTEXT")) as client:
        log_in(client, "bob")
        got = codes(client.request(request_()))
    assert got and set(got) == {expected}, (api, got)
    with WireClient(*secure.address("SASL_PLAINTEXT")) as client:
        log_in(client, "admin")
        got = codes(client.request(request_()))
    assert got and not set(got) & AUTHORIZATION_CODES, (api, got)


def _all_topics(client: WireClient) -> Any:
    m = _m(3, 4)
    return client.request(m.MetadataRequest(topics=None, allow_auto_topic_creation=False))


def test_lists_show_only_what_may_be_described(secure: SecureBroker) -> None:
    with WireClient(*secure.address("SASL_PLAINTEXT")) as client:
        log_in(client, "admin")
        client.ensure_topic("listed")
        assert TOPIC in {t.name for t in _all_topics(client).topics}
    with WireClient(*secure.address("SASL_PLAINTEXT")) as client:
        log_in(client, "bob")
        assert _all_topics(client).topics == ()
        (entry,) = client.metadata([TOPIC]).topics
        assert entry.error_code == T
        assert client.request(_m(16, 0).ListGroupsRequest()).groups == ()
        assert client.request(_m(66, 0).ListTransactionsRequest()).transaction_states == ()
