"""What a scenario runs on: one raw connection to a broker plus typed request helpers.

Every helper sends exactly one request and returns the raw kio response; a scenario
records the responses it wants compared with :meth:`Session.record`.
"""

from __future__ import annotations

import datetime
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

from kio.schema.errors import ErrorCode

from broker.wire import build_batch, fix_crc, raw_frame
from onceflow.admin.wire import KafkaConnection, decode_response, request_module
from onceflow.broker.protocol import build
from onceflow.broker.records import ATTRIBUTES_OFFSET

TIMEOUT = datetime.timedelta(seconds=10)
READY_TIMEOUT = 30.0
TRANSACTIONAL = 0x10


def txn_batch(values: Sequence[bytes], producer_id: int, epoch: int, sequence: int) -> bytes:
    """A transactional batch of keyless records (attribute bit 4 set, CRC fixed)."""
    batch = bytearray(
        build_batch(
            [(None, v) for v in values],
            producer_id=producer_id,
            producer_epoch=epoch,
            base_sequence=sequence,
        )
    )
    (attributes,) = struct.unpack_from(">h", batch, ATTRIBUTES_OFFSET)
    struct.pack_into(">h", batch, ATTRIBUTES_OFFSET, attributes | TRANSACTIONAL)
    fix_crc(batch)
    return bytes(batch)


# Answers a client retries: the scenario waits them out instead of recording them.
RETRIABLE = frozenset({
    ErrorCode.coordinator_load_in_progress, ErrorCode.coordinator_not_available,
    ErrorCode.not_coordinator, ErrorCode.concurrent_transactions,
})  # fmt: skip
RETRY_TIMEOUT = 30.0
PRODUCE_RETRY_TIMEOUT = 10.0


def retried(call: Callable[[], Any]) -> Any:
    """``call()`` again while it answers a retriable error, as a client would."""
    deadline = time.monotonic() + RETRY_TIMEOUT
    while (answer := call()).error_code in RETRIABLE:
        assert time.monotonic() < deadline, f"still retriable after {RETRY_TIMEOUT}s: {answer}"
        time.sleep(0.05)
    return answer


def _committed(cls: type, offset: int) -> Any:
    """The partition-0 entry of an OffsetCommit or TxnOffsetCommit request."""
    return build(
        cls,
        partition_index=0,
        committed_offset=offset,
        committed_leader_epoch=-1,
        committed_metadata=None,
    )


class Session:
    """One scenario's connection to one broker; names are the same on every broker."""

    def __init__(self, bootstrap: str, scenario: str) -> None:
        self.conn = KafkaConnection.connect(bootstrap)
        self.bootstrap = bootstrap
        self.prefix = f"conformance-{scenario}"
        self.recorded: list[tuple[str, Any]] = []

    def close(self) -> None:
        self.conn.close()

    def name(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"

    def record(self, label: str, response: Any) -> Any:
        self.recorded.append((label, response))
        return response

    # -- topics ------------------------------------------------------------------

    def create_topics(self, topics: Sequence[tuple[str, int, int, dict[str, str]]],
                      validate_only: bool = False) -> Any:  # fmt: skip
        """CreateTopics v4 of (name, partitions, replication factor, configs)."""
        m = request_module(19, 4)
        return self.conn.request(
            build(
                m.CreateTopicsRequest,
                topics=tuple(
                    build(
                        m.CreatableTopic,
                        name=name,
                        num_partitions=partitions,
                        replication_factor=replication,
                        assignments=(),
                        configs=tuple(
                            build(m.CreatableTopicConfig, name=k, value=v)
                            for k, v in configs.items()
                        ),
                    )
                    for name, partitions, replication, configs in topics
                ),
                timeout=TIMEOUT,
                validate_only=validate_only,
            )
        )

    def topic(self, suffix: str, partitions: int = 1, **configs: str) -> str:
        """Create a topic (not recorded) and wait until every partition has a leader."""
        name = self.name(suffix)
        (answer,) = self.create_topics([(name, partitions, -1, configs)]).topics
        assert answer.error_code == ErrorCode.none, answer
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            (entry,) = self.metadata([name]).topics
            ready = entry.error_code == ErrorCode.none and len(entry.partitions) == partitions
            if ready and all(p.error_code == ErrorCode.none for p in entry.partitions):
                # Kafka lists a leader a moment before that leader serves the partition.
                asked = [(p, -1) for p in range(partitions)]
                answered = self.list_offsets(name, asked).topics[0].partitions
                if all(p.error_code == ErrorCode.none for p in answered):
                    return name
            assert time.monotonic() < deadline, f"topic {name} not ready: {entry}"
            time.sleep(0.05)

    def settle(self, topic: str, partition: int = 0) -> None:
        """Wait until no transaction is open on the partition (LSO = high watermark):
        Kafka writes transaction markers after answering EndTxn, onceflow before."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            (committed,) = self.list_offsets(topic, [(partition, -1)], 1).topics[0].partitions
            (latest,) = self.list_offsets(topic, [(partition, -1)]).topics[0].partitions
            if committed.offset == latest.offset:
                return
            assert time.monotonic() < deadline, f"{topic}-{partition} still has an open txn"
            time.sleep(0.05)

    def produce_retried(self, topic: str, partition: int, records: bytes,
                        transactional_id: str | None = None) -> Any:  # fmt: skip
        """Produce again while Kafka answers NOT_LEADER_OR_FOLLOWER, which it does (for
        Produce before v12) while it verifies the partition with the transaction
        coordinator; the last answer after the bound is returned, not raised."""
        deadline = time.monotonic() + PRODUCE_RETRY_TIMEOUT
        while True:
            answer = self.produce(topic, partition, records, transactional_id)
            (part,) = answer.responses[0].partition_responses
            if part.error_code != ErrorCode.not_leader_or_follower:
                return answer
            if time.monotonic() > deadline:
                return answer
            time.sleep(0.1)

    def metadata(self, topics: Sequence[str], auto_create: bool = False) -> Any:
        m = request_module(3, 12)
        return self.conn.request(
            build(
                m.MetadataRequest,
                topics=tuple(build(m.MetadataRequestTopic, name=t, topic_id=None) for t in topics),
                allow_auto_topic_creation=auto_create,
                include_cluster_authorized_operations=False,
                include_topic_authorized_operations=False,
            )
        )

    def delete_topics(self, names: Sequence[str]) -> Any:
        m = request_module(20, 4)
        return self.conn.request(
            build(m.DeleteTopicsRequest, topic_names=tuple(names), timeout=TIMEOUT)
        )

    def describe_configs(self, topic: str, keys: Sequence[str] | None) -> Any:
        m = request_module(32, 4)
        resource = build(
            m.DescribeConfigsResource,
            resource_type=2,
            resource_name=topic,
            configuration_keys=None if keys is None else tuple(keys),
        )
        return self.conn.request(
            build(
                m.DescribeConfigsRequest,
                resources=(resource,),
                include_synonyms=False,
                include_documentation=False,
            )
        )

    def incremental_alter(self, topic: str, name: str, operation: int, value: str | None) -> Any:
        m = request_module(44, 1)
        config = build(m.AlterableConfig, name=name, config_operation=operation, value=value)
        resource = build(
            m.AlterConfigsResource, resource_type=2, resource_name=topic, configs=(config,)
        )
        return self.conn.request(
            build(m.IncrementalAlterConfigsRequest, resources=(resource,), validate_only=False)
        )

    # -- produce, fetch, offsets ----------------------------------------------------

    def produce(self, topic: str, partition: int, records: bytes,
                transactional_id: str | None = None, acks: int = -1) -> Any:  # fmt: skip
        m = request_module(0, 9)
        data = build(m.PartitionProduceData, index=partition, records=records)
        return self.conn.request(
            build(
                m.ProduceRequest,
                transactional_id=transactional_id,
                acks=acks,
                timeout=TIMEOUT,
                topic_data=(build(m.TopicProduceData, name=topic, partition_data=(data,)),),
            )
        )

    def fetch(self, topic: str, partition: int, offset: int, isolation: int = 0) -> Any:
        m = request_module(1, 12)
        asked = build(
            m.FetchPartition,
            partition=partition,
            current_leader_epoch=-1,
            fetch_offset=offset,
            last_fetched_epoch=-1,
            log_start_offset=-1,
            partition_max_bytes=1 << 20,
        )
        return self.conn.request(
            build(
                m.FetchRequest,
                cluster_id=None,
                replica_id=-1,
                max_wait=datetime.timedelta(0),
                min_bytes=1,
                max_bytes=1 << 20,
                isolation_level=isolation,
                session_id=0,
                session_epoch=-1,
                topics=(build(m.FetchTopic, topic=topic, partitions=(asked,)),),
                forgotten_topics_data=(),
                rack_id="",
            )
        )

    def list_offsets(self, topic: str, partitions: Sequence[tuple[int, int]],
                     isolation: int = 0) -> Any:  # fmt: skip
        """ListOffsets v7 of (partition, timestamp) pairs."""
        m = request_module(2, 7)
        asked = tuple(
            build(m.ListOffsetsPartition, partition_index=p, current_leader_epoch=-1, timestamp=t)
            for p, t in partitions
        )
        return self.conn.request(
            build(
                m.ListOffsetsRequest,
                replica_id=-1,
                isolation_level=isolation,
                topics=(build(m.ListOffsetsTopic, name=topic, partitions=asked),),
            )
        )

    # -- producers and transactions -------------------------------------------------

    def init_producer_id(self, transactional_id: str | None = None,
                         producer_id: int = -1, epoch: int = -1) -> Any:  # fmt: skip
        m = request_module(22, 4)
        return self.conn.request(
            build(
                m.InitProducerIdRequest,
                transactional_id=transactional_id,
                transaction_timeout=datetime.timedelta(seconds=60),
                producer_id=producer_id,
                producer_epoch=epoch,
            )
        )

    def find_coordinator(self, key: str, key_type: int) -> Any:
        m = request_module(10, 2)
        return self.conn.request(build(m.FindCoordinatorRequest, key=key, key_type=key_type))

    def add_partitions(self, txn: str, producer_id: int, epoch: int, topic: str,
                       partitions: Sequence[int]) -> Any:  # fmt: skip
        m = request_module(24, 3)
        return self.conn.request(
            build(
                m.AddPartitionsToTxnRequest,
                v3_and_below_transactional_id=txn,
                v3_and_below_producer_id=producer_id,
                v3_and_below_producer_epoch=epoch,
                v3_and_below_topics=(
                    build(m.AddPartitionsToTxnTopic, name=topic, partitions=tuple(partitions)),
                ),
            )
        )

    def add_offsets(self, txn: str, producer_id: int, epoch: int, group: str) -> Any:
        m = request_module(25, 3)
        return self.conn.request(
            build(
                m.AddOffsetsToTxnRequest,
                transactional_id=txn,
                producer_id=producer_id,
                producer_epoch=epoch,
                group_id=group,
            )
        )

    def txn_offset_commit(self, txn: str, producer_id: int, epoch: int, group: str,
                          topic: str, offset: int) -> Any:  # fmt: skip
        m = request_module(28, 3)
        partition = _committed(m.TxnOffsetCommitRequestPartition, offset)
        return self.conn.request(
            build(
                m.TxnOffsetCommitRequest,
                transactional_id=txn,
                group_id=group,
                producer_id=producer_id,
                producer_epoch=epoch,
                generation_id=-1,
                member_id="",
                group_instance_id=None,
                topics=(build(m.TxnOffsetCommitRequestTopic, name=topic, partitions=(partition,)),),
            )
        )

    def end_txn(self, txn: str, producer_id: int, epoch: int, commit: bool) -> Any:
        m = request_module(26, 1)
        return self.conn.request(
            build(
                m.EndTxnRequest,
                transactional_id=txn,
                producer_id=producer_id,
                producer_epoch=epoch,
                committed=commit,
            )
        )

    def create_partitions(self, topic: str, count: int) -> Any:
        m = request_module(37, 3)
        asked = build(m.CreatePartitionsTopic, name=topic, count=count, assignments=None)
        return self.conn.request(
            build(m.CreatePartitionsRequest, topics=(asked,), timeout=TIMEOUT, validate_only=False)
        )

    def delete_records(self, topic: str, partition: int, offset: int) -> Any:
        m = request_module(21, 2)
        asked = build(m.DeleteRecordsPartition, partition_index=partition, offset=offset)
        return self.conn.request(
            build(
                m.DeleteRecordsRequest,
                topics=(build(m.DeleteRecordsTopic, name=topic, partitions=(asked,)),),
                timeout=TIMEOUT,
            )
        )

    def describe_producers(self, topic: str, partitions: Sequence[int]) -> Any:
        m = request_module(61, 0)
        asked = build(m.TopicRequest, name=topic, partition_indexes=tuple(partitions))
        return self.conn.request(build(m.DescribeProducersRequest, topics=(asked,)))

    def describe_transactions(self, ids: Sequence[str]) -> Any:
        m = request_module(65, 0)
        return self.conn.request(build(m.DescribeTransactionsRequest, transactional_ids=tuple(ids)))

    def api_versions_unsupported(self, version: int) -> Any:
        """ApiVersions at a version no broker speaks: the answer comes in v0 form."""
        correlation_id = self.conn.next_correlation_id()
        # Empty tagged fields: a version this new would use the flexible header (v2).
        self.conn.send_bytes(raw_frame(18, version, correlation_id, b"\x00"))
        got, answer = decode_response(self.conn.read_frame(), 18, 0)
        assert got == correlation_id
        return answer

    # -- groups -------------------------------------------------------------------

    def offset_fetch(self, group: str, topic: str | None, require_stable: bool = False) -> Any:
        """OffsetFetch v7 of partition 0 of ``topic``, or of every topic when None."""
        m = request_module(9, 7)
        topics = (
            None
            if topic is None
            else (build(m.OffsetFetchRequestTopic, name=topic, partition_indexes=(0,)),)
        )
        return self.conn.request(
            build(
                m.OffsetFetchRequest,
                group_id=group,
                topics=topics,
                require_stable=require_stable,
            )
        )

    def offset_commit(self, group: str, topic: str, offset: int, generation: int = -1,
                      member_id: str = "") -> Any:  # fmt: skip
        m = request_module(8, 8)
        partition = _committed(m.OffsetCommitRequestPartition, offset)
        return self.conn.request(
            build(
                m.OffsetCommitRequest,
                group_id=group,
                generation_id_or_member_epoch=generation,
                member_id=member_id,
                group_instance_id=None,
                topics=(build(m.OffsetCommitRequestTopic, name=topic, partitions=(partition,)),),
            )
        )

    def join_group(self, group: str, member_id: str = "", session_ms: int = 10000) -> Any:
        m = request_module(11, 5)
        return self.conn.request(
            build(
                m.JoinGroupRequest,
                group_id=group,
                session_timeout=datetime.timedelta(milliseconds=session_ms),
                rebalance_timeout=datetime.timedelta(milliseconds=session_ms),
                member_id=member_id,
                group_instance_id=None,
                protocol_type="consumer",
                protocols=(build(m.JoinGroupRequestProtocol, name="range", metadata=b""),),
            )
        )

    def sync_group(self, group: str, generation: int, member_id: str,
                   assignment: bytes | None = None) -> Any:  # fmt: skip
        m = request_module(14, 3)
        assignments = (
            ()
            if assignment is None
            else (build(m.SyncGroupRequestAssignment, member_id=member_id, assignment=assignment),)
        )
        return self.conn.request(
            build(
                m.SyncGroupRequest,
                group_id=group,
                generation_id=generation,
                member_id=member_id,
                group_instance_id=None,
                assignments=assignments,
            )
        )

    def heartbeat(self, group: str, generation: int, member_id: str) -> Any:
        m = request_module(12, 3)
        return self.conn.request(
            build(
                m.HeartbeatRequest,
                group_id=group,
                generation_id=generation,
                member_id=member_id,
                group_instance_id=None,
            )
        )

    def describe_groups(self, groups: Sequence[str]) -> Any:
        m = request_module(15, 5)
        return self.conn.request(
            build(
                m.DescribeGroupsRequest, groups=tuple(groups), include_authorized_operations=False
            )
        )

    def leave_group(self, group: str, member_id: str) -> Any:
        m = request_module(13, 1)
        return self.conn.request(build(m.LeaveGroupRequest, group_id=group, member_id=member_id))
