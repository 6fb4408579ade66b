"""ApiVersions: what the broker speaks, including the fallback for too-new clients."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.protocol import (
    NO_THROTTLE,
    build,
    decode_header_v1,
    encode_response,
    response_module,
)

API_KEY = 18


def _answer(version: int, error_code: ErrorCode) -> Any:
    from onceflow.broker.apis import API_TABLE

    m = response_module(API_KEY, version)
    keys = tuple(
        m.ApiVersion(api_key=api.key, min_version=api.min_version, max_version=api.max_version)
        for api in sorted(API_TABLE.values(), key=lambda a: a.key)
    )
    return build(
        m.ApiVersionsResponse,
        error_code=error_code,
        api_keys=keys,
        throttle_time=NO_THROTTLE,
    )


def handle(broker: Any, header: Any, request: Any) -> Any:
    return _answer(request.__version__, ErrorCode.none)


def answer_unsupported(broker: Any, frame: bytes) -> bytes:
    """A client asking for a newer ApiVersions gets error 35 in v0 form and retries lower."""
    header = decode_header_v1(frame)
    response = _answer(0, ErrorCode.unsupported_version)
    return encode_response(API_KEY, 0, header.correlation_id, response)
