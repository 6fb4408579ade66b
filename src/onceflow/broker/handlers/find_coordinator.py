"""FindCoordinator: this single node coordinates every group and transaction."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.protocol import NO_THROTTLE, build, response_module
from onceflow.broker.security.access import Operation, ResourceType, allowed

API_KEY = 10
KEY_TYPE_GROUP = 0
KEY_TYPE_TRANSACTION = 1


def handle(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(API_KEY, request.__version__)
    key_type = getattr(request, "key_type", KEY_TYPE_GROUP)
    if key_type not in (KEY_TYPE_GROUP, KEY_TYPE_TRANSACTION):
        return build(
            m.FindCoordinatorResponse,
            throttle_time=NO_THROTTLE,
            error_code=ErrorCode.invalid_request,
            error_message=f"unknown coordinator key type {key_type}",
            node_id=-1,
            host="",
            port=-1,
        )
    resource, refusal = (
        (ResourceType.GROUP, ErrorCode.group_authorization_failed)
        if key_type == KEY_TYPE_GROUP
        else (ResourceType.TRANSACTIONAL_ID, ErrorCode.transactional_id_authorization_failed)
    )
    if not allowed(broker, Operation.DESCRIBE, resource, request.key):
        return build(
            m.FindCoordinatorResponse,
            throttle_time=NO_THROTTLE,
            error_code=refusal,
            error_message=None,
            node_id=-1,
            host="",
            port=-1,
        )
    host, port = broker.advertised_endpoint()
    return build(
        m.FindCoordinatorResponse,
        throttle_time=NO_THROTTLE,
        error_code=ErrorCode.none,
        error_message=None,
        node_id=broker.config.node_id,
        host=host,
        port=port,
    )
