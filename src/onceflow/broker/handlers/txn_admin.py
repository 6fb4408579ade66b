"""The APIs operators use to find and end hanging transactions: DescribeProducers,
ListTransactions, DescribeTransactions and WriteTxnMarkers.

WriteTxnMarkers is what Kafka's coordinator sends to partition leaders, and what
``kafka-transactions.sh abort`` (and ``onceflow transactions abort``) sends to end a
transaction that a partition shows open: the marker is written to that partition only,
exactly as for a marker from a coordinator; the coordinator's own view of the
transaction is left alone (its timeout still ends the transaction there).
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Awaitable
from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.durable import when_settled
from onceflow.broker.log.partition import PartitionLog
from onceflow.broker.protocol import NO_THROTTLE, build, response_module
from onceflow.broker.security.access import Operation, ResourceType, allowed
from onceflow.broker.transactions import COORDINATOR_EPOCH, TxnState

WRITE_TXN_MARKERS = 27
DESCRIBE_PRODUCERS = 61
DESCRIBE_TRANSACTIONS = 65
LIST_TRANSACTIONS = 66
NO_TIME = datetime.datetime.fromtimestamp(0, datetime.UTC)


def _live_partition(broker: Any, topic: str, index: int) -> PartitionLog | None:
    found = broker.topics.get(topic)
    if found is None or found.deleting or not 0 <= index < len(found.partitions):
        return None
    return found.partitions[index]


# -- DescribeProducers ---------------------------------------------------------------


def describe_producers(broker: Any, header: Any, request: Any) -> Any:
    """Every producer this partition keeps state for, with the first offset of its open
    transaction (the LSO it pins), or -1."""
    m = response_module(DESCRIBE_PRODUCERS, request.__version__)
    topics = []
    for wanted in request.topics:
        partitions = []
        readable = allowed(broker, Operation.READ, ResourceType.TOPIC, wanted.name)
        for index in wanted.partition_indexes:
            partition = _live_partition(broker, wanted.name, index)
            states: tuple[Any, ...] = ()
            error = ErrorCode.none
            if not readable:
                error = ErrorCode.topic_authorization_failed
            elif partition is None:
                error = ErrorCode.unknown_topic_or_partition
            else:
                states = tuple(
                    build(
                        m.ProducerState,
                        producer_id=producer_id,
                        producer_epoch=entry.epoch,
                        last_sequence=entry.last_sequence,
                        last_timestamp=entry.last_timestamp,
                        # Every marker this broker writes carries the one coordinator epoch.
                        coordinator_epoch=COORDINATOR_EPOCH
                        if producer_id in partition.ongoing
                        else -1,
                        current_txn_start_offset=partition.ongoing.get(producer_id, -1),
                    )
                    for producer_id, entry in sorted(partition.producers.entries.items())
                )
            partitions.append(
                build(
                    m.PartitionResponse,
                    partition_index=index,
                    error_code=error,
                    error_message=None,
                    active_producers=states,
                )
            )
        topics.append(build(m.TopicResponse, name=wanted.name, partitions=tuple(partitions)))
    return build(m.DescribeProducersResponse, throttle_time=NO_THROTTLE, topics=tuple(topics))


# -- ListTransactions ----------------------------------------------------------------


def list_transactions(broker: Any, header: Any, request: Any) -> Any:
    """Filters as Kafka's coordinator applies them: states, producer ids, running longer
    than ``duration_filter`` ms (v1+), transactional id matching a regex (v2+)."""
    m = response_module(LIST_TRANSACTIONS, request.__version__)
    known = {s.value for s in TxnState}
    states = set(request.state_filters)
    producers = set(request.producer_id_filters)
    min_duration = getattr(request, "duration_filter", -1)
    pattern_text = getattr(request, "transactional_id_pattern", None)

    def respond(code: ErrorCode, listed: tuple[Any, ...]) -> Any:
        return build(
            m.ListTransactionsResponse,
            throttle_time=NO_THROTTLE,
            error_code=code,
            unknown_state_filters=tuple(sorted(states - known)),
            transaction_states=listed,
        )

    try:
        pattern = re.compile(pattern_text) if pattern_text else None
    except re.error:
        return respond(ErrorCode.invalid_regular_expression, ())
    now_ms = int(time.time() * 1000)
    listed = tuple(
        build(
            m.TransactionState,
            transactional_id=txn.transactional_id,
            producer_id=txn.producer_id,
            transaction_state=txn.state.value,
        )
        for txn in broker.transactions.describe()
        if (not states or txn.state.value in states)
        and (not producers or txn.producer_id in producers)
        and (min_duration < 0 or now_ms - txn.started_ms > min_duration)
        and (pattern is None or pattern.fullmatch(txn.transactional_id))
        and allowed(broker, Operation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, txn.transactional_id)
    )
    return respond(ErrorCode.none, listed)


# -- DescribeTransactions ------------------------------------------------------------


def describe_transactions(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(DESCRIBE_TRANSACTIONS, request.__version__)
    by_id = {t.transactional_id: t for t in broker.transactions.describe()}
    states = []
    for transactional_id in request.transactional_ids:
        txn = by_id.get(transactional_id)
        visible = allowed(
            broker, Operation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, transactional_id
        )
        if txn is None or not visible:
            states.append(
                build(
                    m.TransactionState,
                    error_code=ErrorCode.transactional_id_not_found
                    if visible
                    else ErrorCode.transactional_id_authorization_failed,
                    transactional_id=transactional_id,
                    transaction_state="",
                    transaction_timeout=datetime.timedelta(0),
                    transaction_start_time=NO_TIME,
                    producer_id=-1,
                    producer_epoch=-1,
                    topics=(),
                )
            )
            continue
        by_topic: dict[str, list[int]] = {}
        for topic, index in sorted(txn.partitions):
            by_topic.setdefault(topic, []).append(index)
        states.append(
            build(
                m.TransactionState,
                error_code=ErrorCode.none,
                transactional_id=transactional_id,
                transaction_state=txn.state.value,
                transaction_timeout=datetime.timedelta(milliseconds=txn.timeout_ms),
                transaction_start_time=datetime.datetime.fromtimestamp(
                    max(txn.started_ms, 0) / 1000, datetime.UTC
                ),
                producer_id=txn.producer_id,
                producer_epoch=txn.epoch,
                topics=tuple(
                    build(m.TopicData, topic=topic, partitions=tuple(indexes))
                    for topic, indexes in by_topic.items()
                ),
            )
        )
    return build(
        m.DescribeTransactionsResponse, throttle_time=NO_THROTTLE, transaction_states=tuple(states)
    )


# -- WriteTxnMarkers -----------------------------------------------------------------


def write_txn_markers(broker: Any, header: Any, request: Any) -> Any:
    """Write each requested marker to each of its partitions; answer once durable."""
    m = response_module(WRITE_TXN_MARKERS, request.__version__)
    # (producer id, [(topic, [[partition, error]]))]) in request order.
    results: list[tuple[int, list[tuple[str, list[list[Any]]]]]] = []
    # The outcomes that wait for their marker to be durable, and their waits by index.
    waiting: list[list[Any]] = []
    waits: dict[int, Awaitable[None] | None] = {}
    # Only brokers (and super users) write markers: CLUSTER_ACTION on the cluster.
    permitted = allowed(broker, Operation.CLUSTER_ACTION, ResourceType.CLUSTER)
    for marker in request.markers:
        topics: list[tuple[str, list[list[Any]]]] = []
        results.append((marker.producer_id, topics))
        for wanted in marker.topics:
            outcomes: list[list[Any]] = []
            topics.append((wanted.name, outcomes))
            for index in wanted.partition_indexes:
                error, written = (
                    _write_marker(broker, marker, wanted.name, index)
                    if permitted
                    else (ErrorCode.cluster_authorization_failed, None)
                )
                outcome = [index, error]
                outcomes.append(outcome)
                if written is not None:
                    waits[len(waiting)] = broker.make_durable(written)
                    waiting.append(outcome)

    def respond(settled: dict[int, Any]) -> Any:
        for slot, result in settled.items():
            if isinstance(result, BaseException):
                waiting[slot][1] = ErrorCode.kafka_storage_error
        return build(
            m.WriteTxnMarkersResponse,
            markers=tuple(
                build(
                    m.WritableTxnMarkerResult,
                    producer_id=producer_id,
                    topics=tuple(
                        build(
                            m.WritableTxnMarkerTopicResult,
                            name=name,
                            partitions=tuple(
                                build(
                                    m.WritableTxnMarkerPartitionResult,
                                    partition_index=index,
                                    error_code=error,
                                )
                                for index, error in outcomes
                            ),
                        )
                        for name, outcomes in topics
                    ),
                )
                for producer_id, topics in results
            ),
        )

    return when_settled(waits, respond)


def _write_marker(
    broker: Any, marker: Any, topic: str, index: int
) -> tuple[ErrorCode, PartitionLog | None]:
    """The outcome for one partition, and the partition when a marker was appended."""
    partition = _live_partition(broker, topic, index)
    if partition is None:
        return ErrorCode.unknown_topic_or_partition, None
    if marker.coordinator_epoch < COORDINATOR_EPOCH:
        return ErrorCode.transaction_coordinator_fenced, None
    entry = partition.producers.entries.get(marker.producer_id)
    if entry is not None and marker.producer_epoch < entry.epoch:
        return ErrorCode.invalid_producer_epoch, None
    # A producer with nothing open here gets no marker, only its epoch remembered.
    offset = partition.append_marker(
        marker.producer_id,
        marker.producer_epoch,
        marker.transaction_result,
        marker.coordinator_epoch,
    )
    return ErrorCode.none, (partition if offset is not None else None)
