"""Admin APIs: DeleteTopics, CreatePartitions, DeleteRecords, DescribeCluster.

The transaction admin APIs live in txn_admin.py, DescribeLogDirs in log_dirs.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.durable import when_settled
from onceflow.broker.log.retention import remove_directories
from onceflow.broker.offline import (
    StorageRefused,
    answer_when_written,
    check_writable,
    refusals,
    storage_write,
)
from onceflow.broker.protocol import NO_THROTTLE, build, response_module
from onceflow.broker.security.access import Operation, ResourceType, allowed
from onceflow.broker.topics import Topic, TopicError

DELETE_TOPICS = 20
DELETE_RECORDS = 21
CREATE_PARTITIONS = 37
DESCRIBE_CLUSTER = 60
NO_AUTHORIZED_OPERATIONS = -(2**31)
HIGH_WATERMARK = -1


def _live_topic(broker: Any, name: str | None) -> Topic | None:
    topic = broker.topics.get(name) if name is not None else None
    return None if topic is None or topic.deleting else topic


# -- DeleteTopics --------------------------------------------------------------------


def delete_topics(broker: Any, header: Any, request: Any) -> Any:
    """Answer once the topics are gone from metadata and their files are deleted.

    A fetch or produce already decoded finishes on the partition objects it holds (the
    files are closed only after the flusher drains); later requests see
    UNKNOWN_TOPIC_OR_PARTITION. An open transaction on a deleted partition simply writes
    no marker there when it ends.
    """
    m = response_module(DELETE_TOPICS, request.__version__)
    by_id = {t.topic_id: t for t in broker.topics.topics.values()}
    wanted = getattr(request, "topics", None)
    asked = (
        [(t.name, t.topic_id) for t in wanted]
        if wanted is not None
        else [(name, None) for name in request.topic_names]
    )
    results: list[tuple[str | None, Any, ErrorCode, str | None]] = []
    doomed: list[Topic] = []
    for name, topic_id in asked:
        topic = _live_topic(broker, name) if name is not None else by_id.get(topic_id)
        shown = name if name is not None else (topic.name if topic is not None else None)
        if shown is not None and not allowed(broker, Operation.DELETE, ResourceType.TOPIC, shown):
            results.append((name, topic_id, ErrorCode.topic_authorization_failed, "not authorized"))
            continue
        if topic is None or topic.deleting:
            code = ErrorCode.unknown_topic_or_partition if name else ErrorCode.unknown_topic_id
            results.append((name, topic_id, code, "topic does not exist"))
            continue
        try:
            check_writable(broker)
        except StorageRefused as exc:
            results.append((topic.name, topic.topic_id, exc.code, str(exc)))
            continue
        # Maintenance leaves a deleting topic alone; the flag also refuses a second delete.
        topic.deleting = True
        doomed.append(topic)
        results.append((topic.name, topic.topic_id, ErrorCode.none, None))

    def respond() -> Any:
        return build(
            m.DeleteTopicsResponse,
            throttle_time=NO_THROTTLE,
            responses=tuple(
                build(
                    m.DeletableTopicResult,
                    name=name,
                    topic_id=topic_id,
                    error_code=code,
                    error_message=message,
                )
                for name, topic_id, code, message in results
            ),
        )

    if not doomed:
        return respond()

    async def finish() -> Any:
        partitions = [p for t in doomed for p in t.partitions]
        await broker.maintenance.quiesce(partitions)
        moved = []
        for topic in doomed:
            moved += await broker.topics.remove(topic.name)
            broker.groups.forget_topic(topic.name)
        await broker.flusher.drain()
        for partition, _ in moved:
            partition.discard()
        await asyncio.to_thread(remove_directories, [path for _, path in moved])
        return respond()

    return finish()


# -- CreatePartitions ------------------------------------------------------------------


def create_partitions(broker: Any, header: Any, request: Any) -> Any:
    """Answer once the grown topics are durable (topics.json is written off the loop)."""
    m = response_module(CREATE_PARTITIONS, request.__version__)
    names = [t.name for t in request.topics]
    node = broker.config.node_id
    # [name, error, message] per topic, in request order.
    results: list[list[Any]] = []
    waits: dict[int, Awaitable[None]] = {}
    for wanted in request.topics:
        result = [wanted.name, ErrorCode.none, None]
        try:
            if names.count(wanted.name) > 1:
                raise TopicError(ErrorCode.invalid_request, f"topic {wanted.name!r} appears twice")
            if not allowed(broker, Operation.ALTER, ResourceType.TOPIC, wanted.name):
                raise TopicError(ErrorCode.topic_authorization_failed, "not authorized")
            topic = _live_topic(broker, wanted.name)
            if topic is None:
                raise TopicError(
                    ErrorCode.unknown_topic_or_partition, f"topic {wanted.name!r} does not exist"
                )
            if wanted.count <= len(topic.partitions):
                raise TopicError(
                    ErrorCode.invalid_partitions,
                    f"topic {wanted.name!r} has {len(topic.partitions)} partitions; the new "
                    f"count must be larger, got {wanted.count}",
                )
            for assignment in wanted.assignments or ():
                if list(assignment.broker_ids) != [node]:
                    raise TopicError(
                        ErrorCode.invalid_replica_assignment,
                        f"every partition must be assigned to the single broker {node}",
                    )
            if not request.validate_only:
                with storage_write(broker):
                    waits[len(results)] = broker.topics.add_partitions(wanted.name, wanted.count)
        except (TopicError, StorageRefused) as exc:
            result[1:] = ErrorCode(exc.code), str(exc)
        results.append(result)

    def respond() -> Any:
        return build(
            m.CreatePartitionsResponse,
            throttle_time=NO_THROTTLE,
            results=tuple(
                build(
                    m.CreatePartitionsTopicResult,
                    name=name,
                    error_code=error,
                    error_message=message,
                )
                for name, error, message in results
            ),
        )

    return answer_when_written(broker, results, waits, respond)


# -- DeleteRecords ---------------------------------------------------------------------


def delete_records(broker: Any, header: Any, request: Any) -> Any:
    """Advance each partition's log start offset; answer once that is durable (written
    off the loop). Retention then removes the segments wholly below it."""
    m = response_module(DELETE_RECORDS, request.__version__)
    # (topic name, [partition index, low watermark, error] per partition)
    results: list[tuple[str, list[list[Any]]]] = []
    waits: dict[tuple[int, int], Awaitable[None] | None] = {}
    for wanted in request.topics:
        topic = _live_topic(broker, wanted.name)
        deletable = allowed(broker, Operation.DELETE, ResourceType.TOPIC, wanted.name)
        partitions: list[list[Any]] = []
        for asked in wanted.partitions:
            result = [asked.partition_index, -1, ErrorCode.none]
            partition = (
                topic.partitions[asked.partition_index]
                if topic is not None and 0 <= asked.partition_index < len(topic.partitions)
                else None
            )
            if not deletable:
                result[2] = ErrorCode.topic_authorization_failed
            elif partition is None:
                result[2] = ErrorCode.unknown_topic_or_partition
            elif topic is not None and topic.effective.compact and not topic.effective.delete:
                # As Kafka: records of a compacted-only topic are removed by compaction.
                result[2] = ErrorCode.policy_violation
            else:
                offset = (
                    partition.high_watermark if asked.offset == HIGH_WATERMARK else asked.offset
                )
                if not 0 <= offset <= partition.high_watermark:
                    result[2] = ErrorCode.offset_out_of_range
                else:
                    try:
                        with storage_write(broker):
                            waits[len(results), len(partitions)] = partition.advance_log_start(
                                offset
                            )
                        result[1] = partition.log_start_offset
                    except StorageRefused as exc:
                        result[2] = exc.code
            partitions.append(result)
        results.append((wanted.name, partitions))

    def respond(outcomes: dict[tuple[int, int], Any]) -> Any:
        for (t_slot, p_slot), refused in refusals(broker, outcomes).items():
            results[t_slot][1][p_slot][1:] = -1, refused.code
        return build(
            m.DeleteRecordsResponse,
            throttle_time=NO_THROTTLE,
            topics=tuple(
                build(
                    m.DeleteRecordsTopicResult,
                    name=name,
                    partitions=tuple(
                        build(
                            m.DeleteRecordsPartitionResult,
                            partition_index=index,
                            low_watermark=low,
                            error_code=error,
                        )
                        for index, low, error in partitions
                    ),
                )
                for name, partitions in results
            ),
        )

    return when_settled(waits, respond)


# -- DescribeCluster -----------------------------------------------------------------


def describe_cluster(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(DESCRIBE_CLUSTER, request.__version__)
    node = broker.config.node_id
    host, port = broker.advertised_endpoint()
    return build(
        m.DescribeClusterResponse,
        throttle_time=NO_THROTTLE,
        error_code=ErrorCode.none,
        error_message=None,
        endpoint_type=getattr(request, "endpoint_type", 1),
        cluster_id=broker.cluster_id,
        controller_id=node,
        brokers=(
            build(
                m.DescribeClusterBroker,
                broker_id=node,
                host=host,
                port=port,
                rack=None,
                is_fenced=False,
            ),
        ),
        cluster_authorized_operations=NO_AUTHORIZED_OPERATIONS,
    )
