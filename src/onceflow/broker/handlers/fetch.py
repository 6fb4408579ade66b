"""Fetch: stored batches as they are, long-polling until min bytes or max wait."""

from __future__ import annotations

import asyncio
from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.protocol import NO_THROTTLE, build, response_module
from onceflow.broker.security.access import Operation, ResourceType, allowed

API_KEY = 1
READ_COMMITTED = 1


def handle(broker: Any, header: Any, request: Any) -> Any:
    response, size = _collect(broker, request)
    if request.max_wait.total_seconds() <= 0 or _answer_now(broker, request, size):
        return response
    return _long_poll(broker, request)


def _answer_now(broker: Any, request: Any, size: int) -> bool:
    """Whether an answer of ``size`` record bytes (-1: an error) goes out now."""
    if size < 0 or size >= request.min_bytes:
        return True
    return request.min_bytes > 1 and _min_bytes_met(broker, request)


async def _long_poll(broker: Any, request: Any) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.max_wait.total_seconds()
    # Woken only by these partitions' new data (an unknown one answers at once anyway).
    partitions = [
        broker.topics.partition(wanted.topic, asked.partition)
        for wanted in request.topics
        for asked in wanted.partitions
    ]
    ready = None if request.min_bytes <= 1 else lambda: _min_bytes_met(broker, request)
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return _collect(broker, request)[0]
        await broker.fetch_waiters.wait([p for p in partitions if p is not None], remaining, ready)
        response, size = _collect(broker, request)
        if _answer_now(broker, request, size):
            return response


def _min_bytes_met(broker: Any, request: Any) -> bool:
    """Whether the visible data behind the fetch offsets reaches min_bytes, from the
    logs' positions alone (no answer built). As in Kafka, a partition whose fetch offset
    is on a segment before the visible end also makes the fetch answer: its read stops
    at that segment's end, so waiting would not add to it."""
    if broker.storage_error is not None:
        return True  # the answer is an error now
    upper_is_lso = request.isolation_level == READ_COMMITTED
    found = 0
    for wanted in request.topics:
        for asked in wanted.partitions:
            partition = broker.topics.partition(wanted.topic, asked.partition)
            if partition is None:
                return True  # deleted while parked: the answer is an error now
            upper = partition.last_stable_offset if upper_is_lso else partition.high_watermark
            size, rolled = partition.fetchable(asked.fetch_offset, upper)
            found += min(size, asked.partition_max_bytes)
            if rolled or found >= request.min_bytes:
                return True
    return False


def _collect(broker: Any, request: Any) -> tuple[Any, int]:
    """The response as of now and its record bytes (-1 when an error must go out now)."""
    m = response_module(API_KEY, request.__version__)
    read_committed = request.isolation_level == READ_COMMITTED
    budget = request.max_bytes
    total = 0
    urgent = False
    topics = []
    for wanted in request.topics:
        partitions = []
        readable = allowed(broker, Operation.READ, ResourceType.TOPIC, wanted.topic)
        for asked in wanted.partitions:
            partition = broker.topics.partition(wanted.topic, asked.partition)
            error = ErrorCode.none
            records = b""
            # As Kafka: read_uncommitted answers carry no aborted list at all (null).
            aborted: tuple[Any, ...] | None = () if read_committed else None
            high_watermark = last_stable = log_start = -1
            if not readable:
                error = ErrorCode.topic_authorization_failed
            elif partition is None:
                error = ErrorCode.unknown_topic_or_partition
            elif broker.storage_error is not None:
                error = ErrorCode.kafka_storage_error
            else:
                high_watermark = partition.high_watermark
                last_stable = partition.last_stable_offset
                log_start = partition.log_start_offset
                upper = last_stable if read_committed else high_watermark
                if not log_start <= asked.fetch_offset <= high_watermark:
                    error = ErrorCode.offset_out_of_range
                elif budget > 0 or total == 0:
                    # The first batch of the response is sent whole even past max_bytes.
                    limit = (
                        min(asked.partition_max_bytes, budget)
                        if total
                        else asked.partition_max_bytes
                    )
                    records = partition.read(asked.fetch_offset, limit, upper)
                    budget -= len(records)
                    total += len(records)
                    if read_committed and records:
                        aborted = tuple(
                            m.AbortedTransaction(
                                producer_id=a.producer_id, first_offset=a.first_offset
                            )
                            for a in partition.aborted.overlapping(asked.fetch_offset, upper)
                        )
            if error is not ErrorCode.none:
                # As Kafka: a partition answered with an error reports no offsets, and no
                # aborted list (null) unless the partition is unknown (empty).
                high_watermark = last_stable = log_start = -1
                aborted = () if partition is None else None
            urgent = urgent or error is not ErrorCode.none
            partitions.append(
                build(
                    m.PartitionData,
                    partition_index=asked.partition,
                    error_code=error,
                    high_watermark=high_watermark,
                    last_stable_offset=last_stable,
                    log_start_offset=log_start,
                    aborted_transactions=aborted,
                    preferred_read_replica=-1,
                    records=records,
                )
            )
        topics.append(
            build(m.FetchableTopicResponse, topic=wanted.topic, partitions=tuple(partitions))
        )
    response = build(
        m.FetchResponse,
        throttle_time=NO_THROTTLE,
        error_code=ErrorCode.none,
        session_id=0,
        responses=tuple(topics),
    )
    return response, -1 if urgent else total
