"""InitProducerId for idempotent (non-transactional) producers."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.protocol import NO_THROTTLE, build, response_module

API_KEY = 22
# An epoch that reaches this value cannot be bumped again: the producer gets a new id.
MAX_EPOCH = 32767


def handle(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(API_KEY, request.__version__)

    def answer(error: ErrorCode, producer_id: int = -1, epoch: int = -1) -> Any:
        return build(
            m.InitProducerIdResponse,
            throttle_time=NO_THROTTLE,
            error_code=error,
            producer_id=producer_id,
            producer_epoch=epoch,
        )

    if request.transactional_id is not None:
        return answer(ErrorCode.coordinator_not_available)
    known_id = getattr(request, "producer_id", -1)
    known_epoch = getattr(request, "producer_epoch", -1)
    if known_id >= 0 and 0 <= known_epoch < MAX_EPOCH - 1:
        # KIP-360: an idempotent producer recovers from a lost sequence by bumping its epoch.
        return answer(ErrorCode.none, known_id, known_epoch + 1)
    return answer(ErrorCode.none, broker.producer_ids.allocate(), 0)
