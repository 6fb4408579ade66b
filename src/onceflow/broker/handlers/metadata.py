"""Metadata: this broker is the only node and leads every partition."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.durable import when_settled
from onceflow.broker.offline import StorageRefused, refusals, storage_write
from onceflow.broker.protocol import NO_THROTTLE, build, response_module
from onceflow.broker.security.access import Operation, ResourceType, allowed
from onceflow.broker.topics import Topic, TopicError, validate_topic_name

API_KEY = 3
# Kafka's value for "authorized operations were not requested".
NO_AUTHORIZED_OPERATIONS = -(2**31)

NULL_NAME_SINCE = 12


def may_create_topic(broker: Any, name: str) -> bool:
    """CREATE on the cluster, or on the topic (as Kafka's CreateTopics and auto-create)."""
    return allowed(broker, Operation.CREATE, ResourceType.CLUSTER) or allowed(
        broker, Operation.CREATE, ResourceType.TOPIC, name
    )


def handle(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(API_KEY, request.__version__)
    node = broker.config.node_id
    requested = request.topics
    if request.__version__ == 0 and not requested:
        requested = None  # v0 used an empty list to mean "all topics"
    allow_create = getattr(request, "allow_auto_topic_creation", True)

    def topic_entry(name: str | None, topic: Topic | None, error: ErrorCode) -> Any:
        partitions = tuple(
            build(
                m.MetadataResponsePartition,
                error_code=ErrorCode.none,
                partition_index=index,
                leader_id=node,
                leader_epoch=0,
                replica_nodes=(node,),
                isr_nodes=(node,),
                offline_replicas=(),
            )
            for index in range(len(topic.partitions) if topic else 0)
        )
        return build(
            m.MetadataResponseTopic,
            error_code=error,
            name=name,
            topic_id=topic.topic_id if topic else None,
            is_internal=False,
            partitions=partitions,
            topic_authorized_operations=NO_AUTHORIZED_OPERATIONS,
        )

    def visible(name: str) -> bool:
        return allowed(broker, Operation.DESCRIBE, ResourceType.TOPIC, name)

    entries: list[Any] = []
    # Slots of entries whose topic is being created: filled once it is durable.
    creations: dict[int, Awaitable[Topic]] = {}
    if requested is None:
        # Topics the client may not describe are left out, as if they did not exist.
        entries = [
            topic_entry(t.name, t, ErrorCode.none)
            for t in broker.topics.topics.values()
            if visible(t.name)
        ]
    else:
        by_id = {t.topic_id: t for t in broker.topics.topics.values()}
        for wanted in requested:
            name = wanted.name
            topic = broker.topics.get(name) if name is not None else by_id.get(wanted.topic_id)
            shown = topic.name if topic is not None else name
            if shown is not None and not visible(shown):
                entries.append(topic_entry(name, None, ErrorCode.topic_authorization_failed))
                continue
            if topic is not None:
                entries.append(topic_entry(topic.name, topic, ErrorCode.none))
                continue
            if name is None:
                # Responses carry a null name only from v12 (v10-11 asked by id too).
                unnamed = None if request.__version__ >= NULL_NAME_SINCE else ""
                entries.append(topic_entry(unnamed, None, ErrorCode.unknown_topic_id))
                continue
            try:
                validate_topic_name(name)
            except TopicError as exc:
                entries.append(topic_entry(name, None, ErrorCode(exc.code)))
                continue
            creation = broker.topics.creating(name)
            if creation is None and (
                allow_create and broker.config.auto_create_topics and may_create_topic(broker, name)
            ):
                try:
                    with storage_write(broker):
                        creation = broker.topics.create(name, broker.config.default_partitions)
                except StorageRefused as exc:
                    entries.append(topic_entry(name, None, exc.code))
                    continue
            if creation is not None:
                creations[len(entries)] = creation
            entries.append(topic_entry(name, None, ErrorCode.unknown_topic_or_partition))

    host, port = broker.advertised_endpoint()

    def respond(created: dict[int, Any]) -> Any:
        refused = refusals(broker, created)
        for slot, outcome in created.items():
            name = entries[slot].name
            if slot in refused:
                entries[slot] = topic_entry(name, None, refused[slot].code)
            else:
                entries[slot] = topic_entry(name, outcome, ErrorCode.none)
        return build(
            m.MetadataResponse,
            throttle_time=NO_THROTTLE,
            brokers=(
                build(
                    m.MetadataResponseBroker,
                    node_id=node,
                    host=host,
                    port=port,
                    rack=None,
                ),
            ),
            cluster_id=broker.cluster_id,
            controller_id=node,
            topics=tuple(entries),
        )

    # Answered once the topics it creates are durable (their creation runs off the loop).
    return when_settled(creations, respond)
