"""DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics and the broker.

Topic overrides are validated by ``topic_config`` and stored in topics.json; every other
key is reported with its default and where it comes from, as Kafka does. Broker configs
are described (read-only): the embedded broker takes them from its command line.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.offline import StorageRefused, answer_when_written, storage_write
from onceflow.broker.protocol import NO_THROTTLE, build, response_module
from onceflow.broker.security.access import Operation, ResourceType, allowed
from onceflow.broker.topic_config import (
    TOPIC_KEYS,
    ConfigError,
    ConfigSource,
    ConfigType,
    apply_incremental,
    validate,
)

DESCRIBE_CONFIGS = 32
ALTER_CONFIGS = 33
INCREMENTAL_ALTER_CONFIGS = 44
TOPIC = 2
BROKER = 4


class ResourceError(Exception):
    """A resource-level refusal with its Kafka error code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- rows: (name, value, source, type, read-only, synonyms, doc) ----------------------

Row = tuple[str, str | None, ConfigSource, ConfigType, bool, list[tuple[str, str, int]], str]


def _topic_rows(broker: Any, name: str) -> Iterator[Row]:
    topic = broker.topics.get(name)
    if topic is None:
        raise ResourceError(ErrorCode.unknown_topic_or_partition, f"topic {name!r} does not exist")
    configs = broker.topics.configs
    for key, value, source in configs.describe(topic.configs):
        synonyms = []
        if source is ConfigSource.DYNAMIC_TOPIC_CONFIG:
            synonyms.append((key.name, value, int(source)))
        default, default_source = configs.default(key.name)
        if key.broker_synonym and default_source is ConfigSource.STATIC_BROKER_CONFIG:
            synonyms.append((key.broker_synonym, default, int(default_source)))
        yield key.name, value, source, key.type, False, synonyms, key.doc


def _broker_rows(broker: Any, name: str) -> Iterator[Row]:
    if name not in ("", str(broker.config.node_id)):
        raise ResourceError(
            ErrorCode.invalid_request, f"this broker's id is {broker.config.node_id}"
        )
    configs = broker.topics.configs
    static = ConfigSource.STATIC_BROKER_CONFIG
    cfg = broker.config
    own: list[tuple[str, str, ConfigType]] = [
        ("broker.id", str(broker.config.node_id), ConfigType.INT),
        ("node.id", str(broker.config.node_id), ConfigType.INT),
        ("num.partitions", str(broker.config.default_partitions), ConfigType.INT),
        ("auto.create.topics.enable", str(cfg.auto_create_topics).lower(), ConfigType.BOOLEAN),
        ("log.dirs", str(broker.config.data_dir), ConfigType.STRING),
        ("offsets.retention.minutes", str(int(cfg.offsets_retention_minutes)), ConfigType.INT),
        ("socket.request.max.bytes", str(broker.config.max_request_bytes), ConfigType.INT),
        ("queued.max.request.bytes", str(cfg.queued_max_request_bytes), ConfigType.LONG),
        ("default.replication.factor", "1", ConfigType.INT),
        ("listeners", ",".join(map(str, broker.listeners)), ConfigType.LIST),
        ("sasl.enabled.mechanisms", ",".join(cfg.sasl_mechanisms), ConfigType.LIST),
        # Re-authentication (KIP-368) is not offered: sessions last as long as connections.
        ("connections.max.reauth.ms", "0", ConfigType.LONG),
    ]  # fmt: skip
    for key_name, value, type_ in own:
        yield key_name, value, static, type_, True, [(key_name, value, int(static))], ""
    for key in sorted(TOPIC_KEYS.values(), key=lambda k: k.broker_synonym or ""):
        if key.broker_synonym is None or key.broker_synonym in {r[0] for r in own}:
            continue
        value, source = configs.default(key.name)
        yield key.broker_synonym, value, source, key.type, True, [], key.doc


_ROWS: dict[int, Callable[[Any, str], Iterator[Row]]] = {TOPIC: _topic_rows, BROKER: _broker_rows}


def _authorize(broker: Any, resource: Any, operation: Operation) -> None:
    """Raise TOPIC_ or CLUSTER_AUTHORIZATION_FAILED unless ``operation`` is allowed."""
    if resource.resource_type == TOPIC:
        if not allowed(broker, operation, ResourceType.TOPIC, resource.resource_name):
            raise ResourceError(ErrorCode.topic_authorization_failed, "not authorized")
    elif resource.resource_type == BROKER and not allowed(broker, operation, ResourceType.CLUSTER):
        raise ResourceError(ErrorCode.cluster_authorization_failed, "not authorized")


def describe_configs(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(DESCRIBE_CONFIGS, request.__version__)
    synonyms = getattr(request, "include_synonyms", False)
    documentation = getattr(request, "include_documentation", False)
    results = []
    for resource in request.resources:
        error, message, entries = ErrorCode.none, None, []
        try:
            rows = _ROWS.get(resource.resource_type)
            if rows is None:
                raise ResourceError(
                    ErrorCode.invalid_request,
                    f"resource type {resource.resource_type} is unsupported",
                )
            _authorize(broker, resource, Operation.DESCRIBE_CONFIGS)
            wanted = resource.configuration_keys
            for name, value, source, type_, read_only, syns, doc in rows(
                broker, resource.resource_name
            ):
                if wanted and name not in wanted:
                    continue
                entries.append(
                    build(
                        m.DescribeConfigsResourceResult,
                        name=name,
                        value=value,
                        read_only=read_only,
                        config_source=int(source),
                        # v0 only: "is this the default?"
                        is_default=source is ConfigSource.DEFAULT_CONFIG,
                        is_sensitive=False,
                        synonyms=tuple(
                            build(m.DescribeConfigsSynonym, name=n, value=v, source=s)
                            for n, v, s in (syns if synonyms else [])
                        ),
                        config_type=int(type_),
                        documentation=doc if documentation else None,
                    )
                )
        except ResourceError as exc:
            error, message, entries = exc.code, str(exc), []
        results.append(
            build(
                m.DescribeConfigsResult,
                error_code=error,
                error_message=message,
                resource_type=resource.resource_type,
                resource_name=resource.resource_name,
                configs=tuple(entries),
            )
        )
    return build(m.DescribeConfigsResponse, throttle_time=NO_THROTTLE, results=tuple(results))


def _alter(
    broker: Any,
    request: Any,
    api_key: int,
    new_overrides: Callable[[dict[str, str], Any], dict[str, str]],
) -> Any:
    """Shared by both alter APIs: ``new_overrides(current, resource)`` computes and
    validates a topic's overrides; they are stored unless the request only validates,
    and the answer waits until they are durable (written off the loop)."""
    m = response_module(api_key, request.__version__)
    # [error, message] per resource, in request order.
    results: list[list[Any]] = []
    waits: dict[int, Awaitable[None]] = {}
    for resource in request.resources:
        error, message = ErrorCode.none, None
        try:
            _authorize(broker, resource, Operation.ALTER_CONFIGS)
            if resource.resource_type == BROKER:
                if resource.configs:
                    names = ", ".join(c.name for c in resource.configs)
                    raise ResourceError(
                        ErrorCode.invalid_config,
                        f"broker configs are read-only on the embedded broker "
                        f"(set them on its command line): {names}",
                    )
            elif resource.resource_type == TOPIC:
                topic = broker.topics.get(resource.resource_name)
                if topic is None or topic.deleting:
                    raise ResourceError(
                        ErrorCode.unknown_topic_or_partition,
                        f"topic {resource.resource_name!r} does not exist",
                    )
                overrides = new_overrides(dict(topic.configs), resource)
                if not request.validate_only:
                    with storage_write(broker):
                        waits[len(results)] = broker.topics.set_configs(topic.name, overrides)
            else:
                raise ResourceError(
                    ErrorCode.invalid_request,
                    f"resource type {resource.resource_type} is unsupported",
                )
        except ConfigError as exc:
            error, message = exc.code, str(exc)
        except (ResourceError, StorageRefused) as exc:
            error, message = exc.code, str(exc)
        results.append([error, message])
    response_class = (
        m.AlterConfigsResponse if api_key == ALTER_CONFIGS else m.IncrementalAlterConfigsResponse
    )

    def respond() -> Any:
        responses = tuple(
            build(
                m.AlterConfigsResourceResponse,
                error_code=error,
                error_message=message,
                resource_type=resource.resource_type,
                resource_name=resource.resource_name,
            )
            for resource, (error, message) in zip(request.resources, results, strict=True)
        )
        return build(response_class, throttle_time=NO_THROTTLE, responses=responses)

    return answer_when_written(broker, results, waits, respond)


def alter_configs(broker: Any, header: Any, request: Any) -> Any:
    """Legacy AlterConfigs: the given set replaces every override of the topic."""

    def replace(current: dict[str, str], resource: Any) -> dict[str, str]:
        return validate({c.name: c.value for c in resource.configs})

    return _alter(broker, request, ALTER_CONFIGS, replace)


def incremental_alter_configs(broker: Any, header: Any, request: Any) -> Any:
    def apply(current: dict[str, str], resource: Any) -> dict[str, str]:
        ops = [(c.name, c.config_operation, c.value) for c in resource.configs]
        return apply_incremental(current, ops, broker.topics.configs)

    return _alter(broker, request, INCREMENTAL_ALTER_CONFIGS, apply)
