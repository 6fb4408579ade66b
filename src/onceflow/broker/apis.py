"""The one table of supported APIs: key -> (name, version range, handler).

Version ranges are the ones in DESIGN.md that old and new clients (librdkafka 2.0
through 2.16, aiokafka, kafka-python) all accept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from onceflow.broker.handlers import (
    api_versions,
    create_topics,
    fetch,
    init_producer_id,
    list_offsets,
    metadata,
    produce,
)

# (broker, header, request) -> response entity, an awaitable of one, or None (no answer).
Handler = Callable[[Any, Any, Any], Any]


@dataclass(frozen=True, slots=True)
class Api:
    key: int
    name: str
    min_version: int
    max_version: int
    handler: Handler
    #: Answers a request whose version is out of range instead of closing the connection.
    unsupported_version: Callable[[Any, bytes], bytes] | None = None


API_TABLE: dict[int, Api] = {
    api.key: api
    for api in (
        Api(0, "Produce", 3, 9, produce.handle),
        Api(1, "Fetch", 4, 12, fetch.handle),
        Api(2, "ListOffsets", 1, 7, list_offsets.handle),
        Api(3, "Metadata", 0, 12, metadata.handle),
        Api(18, "ApiVersions", 0, 3, api_versions.handle, api_versions.answer_unsupported),
        Api(19, "CreateTopics", 2, 4, create_topics.handle),
        Api(22, "InitProducerId", 0, 4, init_producer_id.handle),
    )
}
