"""AddPartitionsToTxn, AddOffsetsToTxn, EndTxn: thin translations to the coordinator."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.durable import when_settled
from onceflow.broker.log.disk import StorageOffline
from onceflow.broker.protocol import NO_THROTTLE, build, response_module
from onceflow.broker.security.access import Operation, ResourceType, allowed
from onceflow.broker.transactions import TxnError

ADD_PARTITIONS_KEY = 24
ADD_OFFSETS_KEY = 25
END_TXN_KEY = 26


def client_error(code: ErrorCode, version: int, fenced_since: int) -> ErrorCode:
    """PRODUCER_FENCED arrived in later versions; older clients expect INVALID_PRODUCER_EPOCH."""
    if code is ErrorCode.producer_fenced and version < fenced_since:
        return ErrorCode.invalid_producer_epoch
    return code


#: How a coordinator call's awaitable fails; see ``coordinator_error``.
COORDINATOR_FAILURES = (TxnError, StorageOffline)
#: The key of a coordinator call's awaitable among a request's waits.
DONE = "done"


def coordinator_error(exc: BaseException) -> ErrorCode:
    """The answer to a coordinator call that failed with one of COORDINATOR_FAILURES."""
    if isinstance(exc, TxnError):
        return exc.code
    # Not durable, so not done: a retriable error sends the client back to
    # FindCoordinator, which it retries until the broker is restarted.
    return ErrorCode.coordinator_not_available


# How long a request that meets the producer's previous transaction still completing
# (its markers being made durable: one fsync round, usually) waits for it before it is
# answered CONCURRENT_TRANSACTIONS. Clients back off before retrying that (librdkafka
# for retry.backoff.ms, 100 ms), which would cost far more than the round.
COMPLETION_WAIT_SECONDS = 0.1


def call_coordinator(start: Callable[[], Awaitable[Any] | None]) -> Awaitable[Any] | None:
    """``start()`` (None: done at once); when it meets the previous transaction
    completing, an awaitable that waits for that briefly and calls ``start()`` again.
    Raises TxnError for a refusal."""
    try:
        return start()
    except TxnError as exc:
        if exc.completing is None:
            raise
        return _after_completion(exc.completing, start, exc)


async def _after_completion(
    completing: asyncio.Future[None],
    start: Callable[[], Awaitable[Any] | None],
    refusal: TxnError,
) -> Any:
    try:
        await asyncio.wait_for(asyncio.shield(completing), COMPLETION_WAIT_SECONDS)
    except TimeoutError:
        raise refusal from None
    pending = start()
    return None if pending is None else await pending


def answer_after(
    start: Callable[[], Awaitable[Any] | None],
    respond: Callable[[ErrorCode], Any],
    version: int,
    fenced_since: int = 2,
) -> Any:
    """Run a coordinator call: its synchronous refusal, its immediate success (None) or
    its durable completion becomes the response (the error code is translated for the
    request's version)."""
    try:
        pending = call_coordinator(start)
    except TxnError as exc:
        return respond(client_error(exc.code, version, fenced_since))

    def settled(outcomes: dict[str, Any]) -> Any:
        outcome = outcomes.get(DONE)
        if isinstance(outcome, BaseException):
            return respond(client_error(coordinator_error(outcome), version, fenced_since))
        return respond(ErrorCode.none)

    return when_settled({DONE: pending}, settled, COORDINATOR_FAILURES)


def handle_add_partitions(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(ADD_PARTITIONS_KEY, request.__version__)
    topics = request.v3_and_below_topics
    writable = {
        t.name for t in topics if allowed(broker, Operation.WRITE, ResourceType.TOPIC, t.name)
    }
    # Partitions that stop the whole request; the others are then not attempted.
    refused: dict[tuple[str, int], ErrorCode] = {}
    for t in topics:
        for p in t.partitions:
            if t.name not in writable:
                refused[(t.name, p)] = ErrorCode.topic_authorization_failed
            elif broker.topics.partition(t.name, p) is None:
                refused[(t.name, p)] = ErrorCode.unknown_topic_or_partition
    if not _may_write_txn(broker, request.v3_and_below_transactional_id):
        error = ErrorCode.transactional_id_authorization_failed
        refused = {(t.name, p): error for t in topics for p in t.partitions}

    def respond(error: ErrorCode) -> Any:
        def code(name: str, index: int) -> ErrorCode:
            if not refused:
                return error
            return refused.get((name, index), ErrorCode.operation_not_attempted)

        return build(
            m.AddPartitionsToTxnResponse,
            throttle_time=NO_THROTTLE,
            results_by_topic_v3_and_below=tuple(
                build(
                    m.AddPartitionsToTxnTopicResult,
                    name=t.name,
                    results_by_partition=tuple(
                        build(
                            m.AddPartitionsToTxnPartitionResult,
                            partition_index=p,
                            partition_error_code=code(t.name, p),
                        )
                        for p in t.partitions
                    ),
                )
                for t in topics
            ),
        )

    if refused:
        return respond(ErrorCode.none)
    return answer_after(
        lambda: broker.transactions.add_partitions(
            request.v3_and_below_transactional_id,
            request.v3_and_below_producer_id,
            request.v3_and_below_producer_epoch,
            [(t.name, p) for t in topics for p in t.partitions],
        ),
        respond,
        request.__version__,
    )


def _simple(api_key: int, response_class: str) -> Callable[[int], Callable[[ErrorCode], Any]]:
    def for_version(version: int) -> Callable[[ErrorCode], Any]:
        cls = getattr(response_module(api_key, version), response_class)
        return lambda error: build(cls, throttle_time=NO_THROTTLE, error_code=error)

    return for_version


_add_offsets_response = _simple(ADD_OFFSETS_KEY, "AddOffsetsToTxnResponse")
_end_txn_response = _simple(END_TXN_KEY, "EndTxnResponse")


def _may_write_txn(broker: Any, transactional_id: str) -> bool:
    return allowed(broker, Operation.WRITE, ResourceType.TRANSACTIONAL_ID, transactional_id)


def handle_add_offsets(broker: Any, header: Any, request: Any) -> Any:
    respond = _add_offsets_response(request.__version__)
    if not _may_write_txn(broker, request.transactional_id):
        return respond(ErrorCode.transactional_id_authorization_failed)
    if not allowed(broker, Operation.READ, ResourceType.GROUP, request.group_id):
        return respond(ErrorCode.group_authorization_failed)
    return answer_after(
        lambda: broker.transactions.add_offsets(
            request.transactional_id,
            request.producer_id,
            request.producer_epoch,
            request.group_id,
        ),
        respond,
        request.__version__,
    )


def handle_end_txn(broker: Any, header: Any, request: Any) -> Any:
    if not _may_write_txn(broker, request.transactional_id):
        return _end_txn_response(request.__version__)(
            ErrorCode.transactional_id_authorization_failed
        )
    return answer_after(
        lambda: broker.transactions.end_txn(
            request.transactional_id,
            request.producer_id,
            request.producer_epoch,
            request.committed,
        ),
        _end_txn_response(request.__version__),
        request.__version__,
    )


TXN_OFFSET_COMMIT_KEY = 28
# Refusals of a whole TxnOffsetCommit, which hide the per-topic ones.
_WHOLE_REQUEST_REFUSALS = (
    ErrorCode.transactional_id_authorization_failed,
    ErrorCode.group_authorization_failed,
)
# TxnOffsetCommit answers PRODUCER_FENCED only from this version on.
TXN_OFFSET_COMMIT_FENCED_SINCE = 3


def handle_txn_offset_commit(broker: Any, header: Any, request: Any) -> Any:
    """Offsets staged in the transaction; KIP-447: a consumer's group generation is checked
    so that a zombie whose partitions moved cannot commit offsets for them."""
    m = response_module(TXN_OFFSET_COMMIT_KEY, request.__version__)
    readable = {
        t.name
        for t in request.topics
        if allowed(broker, Operation.READ, ResourceType.TOPIC, t.name)
    }
    offsets = {
        (t.name, p.partition_index): (
            p.committed_offset,
            getattr(p, "committed_leader_epoch", -1),
            p.committed_metadata,
        )
        for t in request.topics
        if t.name in readable
        for p in t.partitions
    }

    def respond(error: ErrorCode) -> Any:
        return build(
            m.TxnOffsetCommitResponse,
            throttle_time=NO_THROTTLE,
            topics=tuple(
                build(
                    m.TxnOffsetCommitResponseTopic,
                    name=t.name,
                    partitions=tuple(
                        build(
                            m.TxnOffsetCommitResponsePartition,
                            partition_index=p.partition_index,
                            error_code=error
                            if t.name in readable or error in _WHOLE_REQUEST_REFUSALS
                            else ErrorCode.topic_authorization_failed,
                        )
                        for p in t.partitions
                    ),
                )
                for t in request.topics
            ),
        )

    if not _may_write_txn(broker, request.transactional_id):
        return respond(ErrorCode.transactional_id_authorization_failed)
    if not allowed(broker, Operation.READ, ResourceType.GROUP, request.group_id):
        return respond(ErrorCode.group_authorization_failed)
    if not offsets:
        return respond(ErrorCode.none)
    member_error = broker.groups.check_transactional_commit(
        request.group_id,
        getattr(request, "generation_id", -1),
        getattr(request, "member_id", ""),
        getattr(request, "group_instance_id", None),
    )
    if member_error is not ErrorCode.none:
        return respond(member_error)
    return answer_after(
        lambda: broker.transactions.stage_offsets(
            request.transactional_id,
            request.producer_id,
            request.producer_epoch,
            request.group_id,
            offsets,
        ),
        respond,
        request.__version__,
        TXN_OFFSET_COMMIT_FENCED_SINCE,
    )
