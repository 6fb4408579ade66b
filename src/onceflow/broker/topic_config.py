"""Topic configuration: the keys Kafka knows, their types, defaults and validation.

A topic stores only its overrides (``Topic.configs``, durable in topics.json); the
effective value of every other key comes from the broker (``segment.bytes`` follows
``--segment-bytes``) or from Kafka's default. DescribeConfigs reports which, with the
source codes Kafka uses.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from typing import Any

from kio.schema.errors import ErrorCode

LONG_MAX = 2**63 - 1
INT_MAX = 2**31 - 1


class ConfigType(enum.IntEnum):
    """DescribeConfigs ``config_type`` codes (KIP-569)."""

    BOOLEAN = 1
    STRING = 2
    INT = 3
    SHORT = 4
    LONG = 5
    DOUBLE = 6
    LIST = 7


class ConfigSource(enum.IntEnum):
    """DescribeConfigs ``config_source`` codes."""

    DYNAMIC_TOPIC_CONFIG = 1
    DYNAMIC_BROKER_CONFIG = 2
    DYNAMIC_DEFAULT_BROKER_CONFIG = 3
    STATIC_BROKER_CONFIG = 4
    DEFAULT_CONFIG = 5


class ConfigError(Exception):
    """A config that must be refused with INVALID_CONFIG; the message names the key."""

    code = ErrorCode.invalid_config


@dataclasses.dataclass(frozen=True, slots=True)
class ConfigKey:
    """One topic config key as Kafka defines it."""

    name: str
    type: ConfigType
    default: str
    #: The broker-wide setting that supplies the default (reported as a synonym).
    broker_synonym: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    doc: str = ""


def _k(
    name: str, type_: ConfigType, default: Any, synonym: str | None = None, **kw: Any
) -> ConfigKey:
    text = str(default).lower() if isinstance(default, bool) else str(default)
    return ConfigKey(name, type_, text, synonym, **kw)


B, S, INT, L, D, LST = (
    ConfigType.BOOLEAN,
    ConfigType.STRING,
    ConfigType.INT,
    ConfigType.LONG,
    ConfigType.DOUBLE,
    ConfigType.LIST,
)

TOPIC_KEYS: dict[str, ConfigKey] = {
    k.name: k
    for k in (
        _k("cleanup.policy", LST, "delete", "log.cleanup.policy", choices=("delete", "compact"),
           doc="delete: retention removes old segments; compact: keep the latest record per key"),
        _k("compression.type", S, "producer", "compression.type",
           choices=("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"),
           doc="stored only: batches are kept as the producer compressed them"),
        _k("delete.retention.ms", L, 86_400_000, "log.cleaner.delete.retention.ms", minimum=0,
           doc="how long a tombstone survives compaction"),
        _k("file.delete.delay.ms", L, 60_000, "log.segment.delete.delay.ms", minimum=0),
        _k("flush.messages", L, LONG_MAX, "log.flush.interval.messages", minimum=1),
        _k("flush.ms", L, LONG_MAX, "log.flush.interval.ms", minimum=0),
        _k("follower.replication.throttled.replicas", LST, ""),
        _k("index.interval.bytes", INT, 4096, "log.index.interval.bytes", minimum=0),
        _k("leader.replication.throttled.replicas", LST, ""),
        _k("local.retention.bytes", L, -2, "log.local.retention.bytes", minimum=-2),
        _k("local.retention.ms", L, -2, "log.local.retention.ms", minimum=-2),
        _k("max.compaction.lag.ms", L, LONG_MAX, "log.cleaner.max.compaction.lag.ms", minimum=1),
        _k("max.message.bytes", INT, 1_048_588, "message.max.bytes", minimum=0,
           doc="largest record batch a producer may append"),
        _k("message.downconversion.enable", B, True, "log.message.downconversion.enable"),
        _k("message.timestamp.after.max.ms", L, LONG_MAX, minimum=0),
        _k("message.timestamp.before.max.ms", L, LONG_MAX, minimum=0),
        _k("message.timestamp.difference.max.ms", L, LONG_MAX, minimum=0),
        _k("message.timestamp.type", S, "CreateTime", "log.message.timestamp.type",
           choices=("CreateTime", "LogAppendTime"),
           doc="LogAppendTime: the broker stamps each batch when it appends it"),
        _k("min.cleanable.dirty.ratio", D, 0.5, "log.cleaner.min.cleanable.ratio",
           minimum=0, maximum=1),
        _k("min.compaction.lag.ms", L, 0, "log.cleaner.min.compaction.lag.ms", minimum=0),
        _k("min.insync.replicas", INT, 1, "min.insync.replicas", minimum=1),
        _k("preallocate", B, False, "log.preallocate"),
        _k("remote.storage.enable", B, False),
        _k("retention.bytes", L, -1, "log.retention.bytes",
           doc="per partition; -1 means no size limit"),
        _k("retention.ms", L, 604_800_000, "log.retention.ms", minimum=-1,
           doc="-1 means no time limit"),
        _k("segment.bytes", INT, 1_073_741_824, "log.segment.bytes", minimum=14),
        _k("segment.index.bytes", INT, 10_485_760, "log.index.size.max.bytes", minimum=4),
        _k("segment.jitter.ms", L, 0, "log.roll.jitter.ms", minimum=0),
        _k("segment.ms", L, 604_800_000, "log.roll.ms", minimum=1),
        _k("unclean.leader.election.enable", B, False, "unclean.leader.election.enable"),
    )
}  # fmt: skip


def _parse(key: ConfigKey, raw: str) -> Any:
    """The typed value of ``raw`` for ``key``; raises ConfigError naming the key."""

    def bad(why: str) -> ConfigError:
        return ConfigError(f"Invalid value {raw!r} for configuration {key.name}: {why}")

    text = raw.strip()
    if key.type is ConfigType.BOOLEAN:
        if text.lower() not in ("true", "false"):
            raise bad("Expected value to be either true or false")
        return text.lower() == "true"
    if key.type in (ConfigType.INT, ConfigType.LONG, ConfigType.DOUBLE):
        convert: Callable[[str], Any] = float if key.type is ConfigType.DOUBLE else int
        try:
            value = convert(text)
        except ValueError:
            raise bad(f"Not a number of type {key.type.name}") from None
        limit = INT_MAX if key.type is ConfigType.INT else LONG_MAX
        if key.type is not ConfigType.DOUBLE and not -limit - 1 <= value <= limit:
            raise bad(f"Not a number of type {key.type.name}")
        if key.minimum is not None and value < key.minimum:
            raise bad(f"Value must be at least {_num(key.minimum)}")
        if key.maximum is not None and value > key.maximum:
            raise bad(f"Value must be no more than {_num(key.maximum)}")
        return value
    if key.type is ConfigType.LIST:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if key.choices:
            for item in items:
                if item not in key.choices:
                    raise bad(f"String must be one of: {', '.join(key.choices)}")
            if not items:
                raise bad(f"List must contain at least one of: {', '.join(key.choices)}")
        return tuple(items)
    if key.choices and text not in key.choices:
        raise bad(f"String must be one of: {', '.join(key.choices)}")
    return text


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def lookup(name: str) -> ConfigKey:
    key = TOPIC_KEYS.get(name)
    if key is None:
        raise ConfigError(f"Unknown topic config name: {name}")
    return key


def validate(configs: Mapping[str, str | None]) -> dict[str, str]:
    """Check topic overrides; returns them normalised (stripped) for storage.

    Raises ConfigError (INVALID_CONFIG) naming the first offending key.
    """
    clean: dict[str, str] = {}
    for name, raw in configs.items():
        key = lookup(name)
        if raw is None:
            raise ConfigError(f"Invalid value null for configuration {name}: a value is required")
        _parse(key, raw)
        clean[name] = raw.strip()
    return clean


@dataclasses.dataclass(frozen=True, slots=True)
class EffectiveConfig:
    """The topic settings the log acts on, parsed."""

    compact: bool
    delete: bool
    retention_ms: int
    retention_bytes: int
    segment_bytes: int
    segment_ms: int
    delete_retention_ms: int
    min_compaction_lag_ms: int
    min_cleanable_dirty_ratio: float
    max_message_bytes: int
    log_append_time: bool


class TopicConfigs:
    """Broker-wide defaults plus the lookups DescribeConfigs and the log need."""

    def __init__(self, broker_defaults: Mapping[str, str]) -> None:
        #: Topic key -> value the broker sets (reported as STATIC_BROKER_CONFIG).
        self.broker_defaults = dict(broker_defaults)

    def default(self, name: str) -> tuple[str, ConfigSource]:
        if name in self.broker_defaults:
            return self.broker_defaults[name], ConfigSource.STATIC_BROKER_CONFIG
        return TOPIC_KEYS[name].default, ConfigSource.DEFAULT_CONFIG

    def describe(self, overrides: Mapping[str, str]) -> list[tuple[ConfigKey, str, ConfigSource]]:
        """(key, value, source) of every topic config, sorted by name."""
        rows = []
        for name, key in sorted(TOPIC_KEYS.items()):
            if name in overrides:
                rows.append((key, overrides[name], ConfigSource.DYNAMIC_TOPIC_CONFIG))
            else:
                rows.append((key, *self.default(name)))
        return rows

    def value(self, overrides: Mapping[str, str], name: str) -> Any:
        raw = overrides[name] if name in overrides else self.default(name)[0]
        return _parse(TOPIC_KEYS[name], raw)

    def effective(self, overrides: Mapping[str, str]) -> EffectiveConfig:
        def get(name: str) -> Any:
            return self.value(overrides, name)

        policy = get("cleanup.policy")
        return EffectiveConfig(
            compact="compact" in policy,
            delete="delete" in policy,
            retention_ms=get("retention.ms"),
            retention_bytes=get("retention.bytes"),
            segment_bytes=get("segment.bytes"),
            segment_ms=get("segment.ms"),
            delete_retention_ms=get("delete.retention.ms"),
            min_compaction_lag_ms=get("min.compaction.lag.ms"),
            min_cleanable_dirty_ratio=get("min.cleanable.dirty.ratio"),
            max_message_bytes=get("max.message.bytes"),
            log_append_time=get("message.timestamp.type") == "LogAppendTime",
        )


# -- IncrementalAlterConfigs -------------------------------------------------------

SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


def apply_incremental(
    current: Mapping[str, str], ops: list[tuple[str, int, str | None]], defaults: TopicConfigs
) -> dict[str, str]:
    """The overrides after SET/DELETE/APPEND/SUBTRACT operations, validated."""
    result = dict(current)
    for name, op, value in ops:
        key = lookup(name)
        if op == SET:
            if value is None:
                raise ConfigError(f"Invalid value null for configuration {name}")
            result[name] = value
        elif op == DELETE:
            result.pop(name, None)
        elif op in (APPEND, SUBTRACT):
            if key.type is not ConfigType.LIST:
                raise ConfigError(
                    f"Config value append/subtract is not allowed for config {name} "
                    f"of type {key.type.name}"
                )
            items = list(defaults.value(result, name))
            given = [v.strip() for v in (value or "").split(",") if v.strip()]
            if op == APPEND:
                items += [v for v in given if v not in items]
            else:
                items = [v for v in items if v not in given]
            result[name] = ",".join(items)
        else:
            raise ConfigError(f"Unknown config operation {op} for configuration {name}")
    return validate(result)
