"""Produce: append each partition's batch, answer once it is as durable as acks asks."""

from __future__ import annotations

import datetime
from collections.abc import Awaitable
from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.durable import when_settled
from onceflow.broker.protocol import NO_THROTTLE, build, response_module
from onceflow.broker.records import (
    ATTRIBUTES_OFFSET,
    HEADER_SIZE,
    TRANSACTIONAL_BIT,
    InvalidBatch,
    read_header,
)
from onceflow.broker.security.access import Operation, ResourceType, allowed

API_KEY = 0
# Errors for which Kafka answers log start offset -1: the batch itself is refused.
_REFUSED_WHOLE = frozenset({
    ErrorCode.corrupt_message, ErrorCode.message_too_large, ErrorCode.record_list_too_large,
    ErrorCode.invalid_record,
})  # fmt: skip


def handle(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(API_KEY, request.__version__)
    acks = request.acks
    # (topic, partition index, error, base offset, log start, message, append time,
    # index of the refused record or None).
    outcomes: list[list[Any]] = []
    waits: dict[int, Awaitable[None]] = {}
    transactional_id = getattr(request, "transactional_id", None)
    refused = _refusal(broker, transactional_id)
    # As Kafka, Produce never creates a topic (Metadata does, when allowed): an unknown
    # topic is UNKNOWN_TOPIC_OR_PARTITION, which clients retry after a metadata refresh.
    offline = broker.storage_error
    for topic_data in request.topic_data:
        denied = refused or (
            None
            if allowed(broker, Operation.WRITE, ResourceType.TOPIC, topic_data.name)
            else ErrorCode.topic_authorization_failed
        )
        for data in topic_data.partition_data:
            outcome = [topic_data.name, data.index, ErrorCode.none, -1, -1, None, -1, None]
            outcomes.append(outcome)
            if acks not in (0, 1, -1):
                outcome[2] = ErrorCode.invalid_required_acks
                outcome[5] = f"acks must be 0, 1 or -1 (all), got {acks}"
                continue
            if denied is not None:
                outcome[2] = denied
                continue
            if offline is not None:
                outcome[2], outcome[5] = ErrorCode.kafka_storage_error, str(offline)
                continue
            partition = broker.topics.partition(topic_data.name, data.index)
            if partition is None:
                outcome[2] = ErrorCode.unknown_topic_or_partition
                continue
            records = data.records or b""
            refused = _refused_transactional(broker, topic_data.name, data.index, records)
            if refused is not None:
                outcome[2], outcome[5] = refused, "transactional batch refused by the coordinator"
                continue
            try:
                appended = partition.append(records)
            except InvalidBatch as exc:
                outcome[2], outcome[5], outcome[7] = ErrorCode(exc.code), str(exc), exc.record_index
                # As Kafka: a batch refused by the producer state or for one of its
                # records reports the log start offset; one refused whole does not.
                if exc.record_index is not None or exc.code not in _REFUSED_WHOLE:
                    outcome[4] = partition.log_start_offset
                continue
            except OSError as exc:
                # A failed write (disk full): fail-stop, like a failed fsync.
                broker.flusher.fail(exc)
                outcome[2], outcome[5] = ErrorCode.kafka_storage_error, str(broker.storage_error)
                offline = broker.storage_error
                continue
            outcome[3], outcome[4] = appended.base_offset, partition.log_start_offset
            outcome[6] = appended.log_append_time
            wait = broker.make_durable(partition)
            if wait is not None:
                waits[len(outcomes) - 1] = wait

    if acks == 0:
        return None

    def respond(settled: dict[int, Any]) -> Any:
        for slot, result in settled.items():
            if isinstance(result, BaseException):
                outcomes[slot][2] = ErrorCode.kafka_storage_error
                outcomes[slot][5] = f"flush failed: {result}"
        by_topic: dict[str, list[Any]] = {}
        for name, index, error, base, start, message, append_time, refused in outcomes:
            by_topic.setdefault(name, []).append(
                build(
                    m.PartitionProduceResponse,
                    index=index,
                    error_code=error,
                    base_offset=base,
                    # None (-1) for CreateTime: the client stamped the records.
                    log_append_time=_as_datetime(append_time),
                    log_start_offset=start,
                    record_errors=()
                    if refused is None
                    else (
                        build(
                            m.BatchIndexAndErrorMessage,
                            batch_index=refused,
                            batch_index_error_message=message,
                        ),
                    ),
                    error_message=message,
                )
            )
        return build(
            m.ProduceResponse,
            throttle_time=NO_THROTTLE,
            responses=tuple(
                build(m.TopicProduceResponse, name=name, partition_responses=tuple(parts))
                for name, parts in by_topic.items()
            ),
        )

    return when_settled(waits, respond)


def _refusal(broker: Any, transactional_id: str | None) -> ErrorCode | None:
    """Every partition's error when the transactional id may not be written."""
    if transactional_id is None or allowed(
        broker, Operation.WRITE, ResourceType.TRANSACTIONAL_ID, transactional_id
    ):
        return None
    return ErrorCode.transactional_id_authorization_failed


def _as_datetime(timestamp_ms: int) -> datetime.datetime | None:
    if timestamp_ms < 0:
        return None
    return datetime.datetime.fromtimestamp(timestamp_ms / 1000, datetime.UTC)


def _refused_transactional(
    broker: Any, topic: str, partition: int, records: bytes
) -> ErrorCode | None:
    """A transactional batch is appended only within its producer's current epoch and to
    a partition added to its ongoing transaction, so that no stray write can leave a
    transaction open on a partition the coordinator does not know about."""
    # attributes is a big-endian int16: the flag bits live in its low byte.
    if len(records) < HEADER_SIZE or not records[ATTRIBUTES_OFFSET + 1] & TRANSACTIONAL_BIT:
        return None
    header = read_header(records)
    code = broker.transactions.verify_produce(
        header.producer_id, header.producer_epoch, topic, partition
    )
    return None if code is ErrorCode.none else code
