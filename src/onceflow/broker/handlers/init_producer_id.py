"""InitProducerId: a producer id for idempotent producers, or a fenced-and-bumped epoch
for a transactional id (through the transaction coordinator)."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.durable import when_settled
from onceflow.broker.handlers.transactions import (
    COORDINATOR_FAILURES,
    DONE,
    call_coordinator,
    client_error,
    coordinator_error,
)
from onceflow.broker.offline import StorageRefused, storage_write
from onceflow.broker.protocol import NO_THROTTLE, build, response_module
from onceflow.broker.security.access import Operation, ResourceType, allowed
from onceflow.broker.transactions import TxnError

API_KEY = 22
# InitProducerId answers PRODUCER_FENCED only from this version on.
FENCED_SINCE = 4


def handle(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(API_KEY, request.__version__)

    def answer(error: ErrorCode, producer_id: int = -1, epoch: int = -1) -> Any:
        return build(
            m.InitProducerIdResponse,
            throttle_time=NO_THROTTLE,
            error_code=client_error(error, request.__version__, FENCED_SINCE),
            producer_id=producer_id,
            producer_epoch=epoch,
        )

    if request.transactional_id is not None:
        if not allowed(
            broker, Operation.WRITE, ResourceType.TRANSACTIONAL_ID, request.transactional_id
        ):
            return answer(ErrorCode.transactional_id_authorization_failed)
        known_id = getattr(request, "producer_id", -1)
        known_epoch = getattr(request, "producer_epoch", -1)
        try:
            pending = call_coordinator(
                lambda: broker.transactions.init_producer_id(
                    request.transactional_id,
                    int(request.transaction_timeout.total_seconds() * 1000),
                    known_id,
                    known_epoch,
                )
            )
        except TxnError as exc:
            return answer(exc.code)

        def settled(outcomes: dict[str, Any]) -> Any:
            outcome = outcomes[DONE]
            if isinstance(outcome, BaseException):
                return answer(coordinator_error(outcome))
            return answer(ErrorCode.none, *outcome)

        return when_settled({DONE: pending}, settled, COORDINATOR_FAILURES)
    if not _may_write_idempotently(broker):
        return answer(ErrorCode.cluster_authorization_failed)
    # As Kafka: without a transactional id, every request gets a fresh producer id, even
    # one naming its current id and epoch (the Java client bumps an idempotent epoch on
    # its own; librdkafka asks for a new id).
    try:
        with storage_write(broker):
            producer_id, reserved = broker.producer_ids.allocate()
    except StorageRefused:
        # As the transactional path: the coordinator cannot serve; clients retry.
        return answer(ErrorCode.coordinator_not_available)

    def reserved_then(outcomes: dict[str, Any]) -> Any:
        if isinstance(outcomes.get(DONE), OSError):
            return answer(ErrorCode.coordinator_not_available)
        return answer(ErrorCode.none, producer_id, 0)

    # Answered once the id's reservation is on disk (rarely waited for: see
    # producer_ids.py), so that no crash can hand it out again.
    return when_settled({DONE: reserved}, reserved_then)


def _may_write_idempotently(broker: Any) -> bool:
    """IDEMPOTENT_WRITE on the cluster, or WRITE on some topic (as Kafka since 3.0)."""
    return allowed(broker, Operation.IDEMPOTENT_WRITE, ResourceType.CLUSTER) or any(
        allowed(broker, Operation.WRITE, ResourceType.TOPIC, name) for name in broker.topics.topics
    )
