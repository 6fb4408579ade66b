"""ListOffsets: earliest, latest, max timestamp, or the first offset at a timestamp."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.protocol import NO_THROTTLE, build, response_module
from onceflow.broker.records import InvalidBatch
from onceflow.broker.security.access import Operation, ResourceType, allowed

API_KEY = 2
LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL = -4
NOT_FOUND = -1
READ_COMMITTED = 1


def handle(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(API_KEY, request.__version__)
    topics = []
    for wanted in request.topics:
        partitions = []
        visible = allowed(broker, Operation.DESCRIBE, ResourceType.TOPIC, wanted.name)
        for asked in wanted.partitions:
            partition = broker.topics.partition(wanted.name, asked.partition_index)
            error, offset, timestamp = ErrorCode.none, NOT_FOUND, NOT_FOUND
            if not visible:
                error = ErrorCode.topic_authorization_failed
            elif partition is None:
                error = ErrorCode.unknown_topic_or_partition
            elif broker.storage_error is not None:
                error = ErrorCode.kafka_storage_error
            elif asked.timestamp == LATEST:
                read_committed = getattr(request, "isolation_level", 0) == READ_COMMITTED
                offset = (
                    partition.last_stable_offset if read_committed else partition.high_watermark
                )
            elif asked.timestamp in (EARLIEST, EARLIEST_LOCAL):
                offset = partition.log_start_offset
            else:
                try:
                    found = (
                        partition.max_timestamp_offset()
                        if asked.timestamp == MAX_TIMESTAMP
                        else partition.offset_for_timestamp(asked.timestamp)
                    )
                except InvalidBatch as exc:
                    error, found = ErrorCode(exc.code), None
                if found is not None:
                    offset, timestamp = found
            partitions.append(
                build(
                    m.ListOffsetsPartitionResponse,
                    partition_index=asked.partition_index,
                    error_code=error,
                    timestamp=timestamp,
                    offset=offset,
                    leader_epoch=0,
                )
            )
        topics.append(
            build(m.ListOffsetsTopicResponse, name=wanted.name, partitions=tuple(partitions))
        )
    return build(m.ListOffsetsResponse, throttle_time=NO_THROTTLE, topics=tuple(topics))
