"""CreateTopics: explicit creation, with the single-node limits enforced."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.handlers.metadata import may_create_topic
from onceflow.broker.offline import StorageRefused, answer_when_written, storage_write
from onceflow.broker.protocol import NO_THROTTLE, build, response_module
from onceflow.broker.topics import TopicError

API_KEY = 19


def handle(broker: Any, header: Any, request: Any) -> Any:
    """Answer once every topic created is durable (its creation runs off the loop)."""
    m = response_module(API_KEY, request.__version__)
    names = [t.name for t in request.topics]
    # [name, error, message] per topic answered, in request order.
    results: list[list[Any]] = []
    creations: dict[int, Awaitable[Any]] = {}
    answered: set[str] = set()
    for creatable in request.topics:
        # As Kafka: a name asked for twice gets one answer (INVALID_REQUEST).
        if creatable.name in answered:
            continue
        answered.add(creatable.name)
        result = [creatable.name, ErrorCode.none, None]
        try:
            if names.count(creatable.name) > 1:
                raise TopicError(
                    ErrorCode.invalid_request, f"topic {creatable.name!r} appears twice"
                )
            if not may_create_topic(broker, creatable.name):
                raise TopicError(ErrorCode.topic_authorization_failed, "not authorized to create")
            count, replication = _layout(broker, creatable)
            broker.topics.check_new(creatable.name, count, replication)
            configs = broker.topics.check_configs({c.name: c.value for c in creatable.configs})
            if not request.validate_only:
                with storage_write(broker):
                    creations[len(results)] = broker.topics.create(creatable.name, count, configs)
        except (TopicError, StorageRefused) as exc:
            result[1:] = ErrorCode(exc.code), str(exc)
        results.append(result)

    def respond() -> Any:
        return build(
            m.CreateTopicsResponse,
            throttle_time=NO_THROTTLE,
            topics=tuple(
                build(m.CreatableTopicResult, name=name, error_code=error, error_message=message)
                for name, error, message in results
            ),
        )

    return answer_when_written(broker, results, creations, respond)


def _layout(broker: Any, creatable: Any) -> tuple[int, int]:
    """(partition count, replication factor) from counts or an explicit assignment."""
    node = broker.config.node_id
    if creatable.assignments:
        if creatable.num_partitions != -1 or creatable.replication_factor != -1:
            raise TopicError(
                ErrorCode.invalid_request,
                "give either a replica assignment or partition and replica counts, not both",
            )
        indexes = sorted(a.partition_index for a in creatable.assignments)
        if indexes != list(range(len(indexes))):
            raise TopicError(
                ErrorCode.invalid_replica_assignment, "assigned partitions must be 0..n-1"
            )
        for assignment in creatable.assignments:
            if list(assignment.broker_ids) != [node]:
                raise TopicError(
                    ErrorCode.invalid_replica_assignment,
                    f"every partition must be assigned to the single broker {node}",
                )
        return len(indexes), 1
    count = (
        broker.config.default_partitions
        if creatable.num_partitions == -1
        else creatable.num_partitions
    )
    replication = 1 if creatable.replication_factor == -1 else creatable.replication_factor
    return count, replication
