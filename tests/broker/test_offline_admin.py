"""Admin APIs while the data dir is offline: every one that would change what is on
disk is refused with KAFKA_STORAGE_ERROR (per item where the schema has codes) and
changes nothing, even once the disk works again; the read-only ones keep answering.
Faults are injected through ``onceflow.broker.log.disk`` (ONCEFLOW_DISK_FAULTS)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kio.schema.errors import ErrorCode
from wire import WireClient, request_module, values_batch

from onceflow.broker.log.disk import FAULTS_ENV
from onceflow.testing import BrokerProcess

OFFLINE_LINE = "storage failure, data dir offline until restart"
SECOND = datetime.timedelta(seconds=1)
ANONYMOUS = "User:ANONYMOUS"


def _m(key: int, version: int) -> Any:
    return request_module(key, version)


def _broker(factory: Callable[..., BrokerProcess], tmp_path: Path, switch: Path) -> BrokerProcess:
    return factory(
        env={FAULTS_ENV: json.dumps({"fsync_fail_while": str(switch)})},
        data_dir=tmp_path / "data",
        # ACLs on (with this client allowed everything) so that Create/DeleteAcls write.
        extra_args=("--acls", "--super-user", ANONYMOUS),
    )


def _take_offline(client: WireClient, switch: Path) -> None:
    """A produce whose fsync fails takes the data dir offline; then the disk "recovers",
    so that a write that slipped through would now succeed and be seen."""
    switch.touch()
    answer = client.produce("t", 0, values_batch([b"lost"]))
    assert answer.error_code == ErrorCode.kafka_storage_error
    switch.unlink()


# (API, request, the item error codes of its answer)
WRITES: list[tuple[str, Callable[[], Any], Callable[[Any], list[Any]]]] = [
    ("CreateTopics", lambda: WireClient.create_topics_request("new"),
     lambda r: [t.error_code for t in r.topics]),
    ("DeleteTopics", lambda: _m(20, 1).DeleteTopicsRequest(topic_names=("t",), timeout=SECOND),
     lambda r: [t.error_code for t in r.responses]),
    ("CreatePartitions", lambda: _m(37, 0).CreatePartitionsRequest(topics=(
        _m(37, 0).CreatePartitionsTopic(name="t", count=3, assignments=None),),
        timeout=SECOND, validate_only=False),
     lambda r: [t.error_code for t in r.results]),
    ("DeleteRecords", lambda: _m(21, 0).DeleteRecordsRequest(topics=(
        _m(21, 0).DeleteRecordsTopic(name="t", partitions=(
            _m(21, 0).DeleteRecordsPartition(partition_index=0, offset=1),)),), timeout=SECOND),
     lambda r: [p.error_code for t in r.topics for p in t.partitions]),
    ("AlterConfigs", lambda: _m(33, 0).AlterConfigsRequest(resources=(
        _m(33, 0).AlterConfigsResource(resource_type=2, resource_name="t", configs=(
            _m(33, 0).AlterableConfig(name="retention.ms", value="1000"),)),),
        validate_only=False),
     lambda r: [x.error_code for x in r.responses]),
    ("IncrementalAlterConfigs", lambda: _m(44, 0).IncrementalAlterConfigsRequest(resources=(
        _m(44, 0).AlterConfigsResource(resource_type=2, resource_name="t", configs=(
            _m(44, 0).AlterableConfig(name="retention.ms", config_operation=0,
                                      value="1000"),)),), validate_only=False),
     lambda r: [x.error_code for x in r.responses]),
    ("CreateAcls", lambda: _m(30, 1).CreateAclsRequest(creations=(
        _m(30, 1).AclCreation(resource_type=2, resource_name="t", resource_pattern_type=3,
                              principal="User:alice", host="*", operation=3,
                              permission_type=3),)),
     lambda r: [x.error_code for x in r.results]),
    ("DeleteAcls", lambda: _m(31, 1).DeleteAclsRequest(filters=(
        _m(31, 1).DeleteAclsFilter(resource_type_filter=1, resource_name_filter=None,
                                   pattern_type_filter=1, principal_filter=None,
                                   host_filter=None, operation=1, permission_type=1),)),
     lambda r: [x.error_code for x in r.filter_results]),
    ("AlterUserScramCredentials", lambda: _m(51, 0).AlterUserScramCredentialsRequest(
        deletions=(), upsertions=(_m(51, 0).ScramCredentialUpsertion(
            name="alice", mechanism=1, iterations=4096, salt=b"salt",
            salted_password=b"p" * 32),)),
     lambda r: [x.error_code for x in r.results]),
]  # fmt: skip


def test_admin_writes_are_refused_while_offline_and_change_nothing(
    onceflow_broker_process_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    switch = tmp_path / "disk-fails"
    broker = _broker(onceflow_broker_process_factory, tmp_path, switch)
    with WireClient.connect(broker.bootstrap) as client:
        client.ensure_topic("t")
        assert client.produce("t", 0, values_batch([b"a", b"b"])).error_code == ErrorCode.none
        _take_offline(client, switch)

        for api, request, codes in WRITES:
            assert codes(client.request(request())) == [ErrorCode.kafka_storage_error], api
        m = _m(3, 4)
        auto = client.request(m.MetadataRequest(topics=(m.MetadataRequestTopic(name="auto"),)))
        assert auto.topics[0].error_code == ErrorCode.kafka_storage_error
        init = client.request(
            _m(22, 0).InitProducerIdRequest(transactional_id=None, transaction_timeout=SECOND)
        )
        assert init.error_code == ErrorCode.coordinator_not_available

        # Read-only APIs that need no disk keep answering.
        assert client.metadata(["t"]).topics[0].error_code == ErrorCode.none
        m = _m(32, 1)
        described = client.request(
            m.DescribeConfigsRequest(
                resources=(
                    m.DescribeConfigsResource(
                        resource_type=2, resource_name="t", configuration_keys=None
                    ),
                )
            )
        )
        assert described.results[0].error_code == ErrorCode.none
        cluster = client.request(
            _m(60, 0).DescribeClusterRequest(include_cluster_authorized_operations=False)
        )
        assert cluster.error_code == ErrorCode.none
        acls = client.request(
            _m(29, 1).DescribeAclsRequest(
                resource_type_filter=1,
                resource_name_filter=None,
                pattern_type_filter=1,
                principal_filter=None,
                host_filter=None,
                operation=1,
                permission_type=1,
            )
        )
        assert acls.error_code == ErrorCode.none

    lines = broker.log_path.read_text().splitlines()
    assert sum(OFFLINE_LINE in line for line in lines) == 1, lines
    assert not any("Traceback" in line for line in lines), lines

    # Nothing refused was written: a restart finds the data dir as it was before.
    broker.kill()
    broker.start()
    with WireClient.connect(broker.bootstrap) as client:
        topics = client.metadata(["t"], version=1).topics
        assert [len(t.partitions) for t in topics] == [1]
        names = {t.name for t in client.request(_m(3, 1).MetadataRequest(topics=None)).topics}
        assert names == {"t"}
        assert client.list_offsets("t", 0, -2).offset == 0  # log start not advanced
        assert [v for _, v in client.fetch_values("t", 0)][:2] == [b"a", b"b"]
    assert not (broker.data_dir / "acls.json").exists()
    assert not (broker.data_dir / "users.json").exists()


def test_an_admin_write_whose_sync_fails_is_refused_not_dropped(
    onceflow_broker_process_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    """The first failure can come from an admin write itself: it is answered
    KAFKA_STORAGE_ERROR on the same connection, which stays usable."""
    switch = tmp_path / "disk-fails"
    broker = _broker(onceflow_broker_process_factory, tmp_path, switch)
    with WireClient.connect(broker.bootstrap) as client:
        client.ensure_topic("t")
        switch.touch()
        created = client.request(WireClient.create_topics_request("new"))
        assert created.topics[0].error_code == ErrorCode.kafka_storage_error
        switch.unlink()
        assert client.produce("t", 0, values_batch([b"x"])).error_code == (
            ErrorCode.kafka_storage_error
        )
    lines = broker.log_path.read_text().splitlines()
    assert sum(OFFLINE_LINE in line for line in lines) == 1, lines
    assert not any("Traceback" in line for line in lines), lines
