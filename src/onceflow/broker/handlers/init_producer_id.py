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
from onceflow.broker.protocol import NO_THROTTLE, build, response_module
from onceflow.broker.transactions import TxnError

API_KEY = 22
# An epoch that reaches this value cannot be bumped again: the producer gets a new id.
MAX_EPOCH = 32767
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

    known_id = getattr(request, "producer_id", -1)
    known_epoch = getattr(request, "producer_epoch", -1)
    if request.transactional_id is not None:
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
    if known_id >= 0 and 0 <= known_epoch < MAX_EPOCH - 1:
        # KIP-360: an idempotent producer recovers from a lost sequence by bumping its epoch.
        return answer(ErrorCode.none, known_id, known_epoch + 1)
    return answer(ErrorCode.none, broker.producer_ids.allocate(), 0)
