"""Topics and their partitions, with the metadata that must survive a restart.

Every change to ``topics.json`` is written off the event loop (``write_json_off_loop``,
one writer thread, so the last change asked for is the last to land) and the caller
answers once it is durable. A topic being created is invisible until then: nothing
can be appended to a topic that a crash could still forget.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from kio.schema.errors import ErrorCode

from onceflow.broker.log.atomic import read_json, write_json_off_loop
from onceflow.broker.log.partition import LogConfig, PartitionLog
from onceflow.broker.topic_config import ConfigError, EffectiveConfig, TopicConfigs, validate

log = logging.getLogger(__name__)

_LEGAL_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
METADATA_FILE = "topics.json"
#: Suffix of a deleted partition's directory until its files are removed.
DELETING_SUFFIX = ".deleting"
_PARTITION_DIR = re.compile(r"^(.+)-(\d+)$")


def _holds_partition_log(path: Path) -> bool:
    """Only a directory that is unmistakably a partition log may be deleted as an orphan:
    a data dir chosen by a user could hold other directories named like ``x-1``."""
    entries = list(path.iterdir())
    return not any(e.is_dir() for e in entries) and any(
        e.suffix == ".log" and e.stem.isdigit() and len(e.stem) == 20 for e in entries
    )


class TopicError(Exception):
    """A topic request that must be refused; ``code`` is the Kafka error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Topic:
    name: str
    topic_id: uuid.UUID
    partitions: list[PartitionLog]
    #: The topic's config overrides, as stored.
    configs: dict[str, str] = field(default_factory=dict)
    effective: EffectiveConfig | None = None
    #: Set while DeleteTopics waits for background work on it to stop.
    deleting: bool = False


def validate_topic_name(name: str) -> None:
    if name in (".", "..") or not _LEGAL_NAME.match(name):
        raise TopicError(
            ErrorCode.invalid_topic_exception,
            f"topic name {name!r} is illegal: use 1-249 of [a-zA-Z0-9._-], not '.' or '..'",
        )


class TopicRegistry:
    """Owns every topic's partition logs; creating a topic is durable before it returns."""

    def __init__(
        self,
        data_dir: Path,
        log_config: LogConfig,
        on_visible: Callable[[PartitionLog], None],
        configs: TopicConfigs | None = None,
    ) -> None:
        self._data_dir = data_dir
        self._log_config = log_config
        self._on_visible = on_visible
        self.configs = configs or TopicConfigs({"segment.bytes": str(log_config.segment_bytes)})
        self.topics: dict[str, Topic] = {}
        #: Topics being created, each until its creation is durable (then in topics).
        self._creating: dict[str, tuple[Topic, asyncio.Task[Topic]]] = {}
        stored = read_json(data_dir / METADATA_FILE) or {"topics": []}
        for raw in stored["topics"]:
            configs = self._usable_configs(raw["name"], raw["configs"])
            self._open(raw["name"], uuid.UUID(raw["id"]), raw["partitions"], configs)
        self._remove_orphans()

    @staticmethod
    def _usable_configs(topic: str, stored: dict[str, str]) -> dict[str, str]:
        """Stored overrides minus any that no longer validate (older brokers stored
        CreateTopics configs unchecked): a bad one must not stop the broker starting."""
        usable = {}
        for name, value in stored.items():
            try:
                usable.update(validate({name: value}))
            except ConfigError as exc:
                log.warning("ignoring stored config of topic %r: %s", topic, exc)
        return usable

    def _open(self, name: str, topic_id: uuid.UUID, count: int, configs: dict[str, str]) -> Topic:
        topic = self._build(name, topic_id, count, configs)
        self.topics[name] = topic
        return topic

    def _build(self, name: str, topic_id: uuid.UUID, count: int, configs: dict[str, str]) -> Topic:
        topic = Topic(name, topic_id, [], dict(configs))
        self._apply_configs(topic)
        topic.partitions = [self._open_partition(topic, index) for index in range(count)]
        return topic

    def _open_partition(self, topic: Topic, index: int) -> PartitionLog:
        return PartitionLog(
            self._data_dir / f"{topic.name}-{index}",
            self._partition_config(topic),
            self._on_visible,
        )

    def _partition_config(self, topic: Topic) -> LogConfig:
        effective = topic.effective
        assert effective is not None
        return LogConfig(
            segment_bytes=effective.segment_bytes,
            index_interval_bytes=self._log_config.index_interval_bytes,
            segment_ms=effective.segment_ms,
            max_message_bytes=effective.max_message_bytes,
            log_append_time=effective.log_append_time,
            compact=effective.compact,
        )

    def _apply_configs(self, topic: Topic) -> None:
        topic.effective = self.configs.effective(topic.configs)
        config = self._partition_config(topic)
        for partition in topic.partitions:
            partition.config = config

    def _remove_orphans(self) -> None:
        """Remove partition directories no topic owns: left by a crash during DeleteTopics
        (or a shrunk topic), they would otherwise come back to life in a new topic of the
        same name."""
        live = {f"{t.name}-{i}" for t in self.topics.values() for i in range(len(t.partitions))}
        for path in self._data_dir.iterdir():
            if not path.is_dir() or path.name in live:
                continue
            if path.name.endswith(DELETING_SUFFIX) or (
                _PARTITION_DIR.match(path.name) and _holds_partition_log(path)
            ):
                log.warning("removing orphaned partition directory %s", path)
                shutil.rmtree(path, ignore_errors=True)

    def get(self, name: str) -> Topic | None:
        return self.topics.get(name)

    def partition(self, name: str, index: int) -> PartitionLog | None:
        topic = self.topics.get(name)
        if topic is None or not 0 <= index < len(topic.partitions):
            return None
        return topic.partitions[index]

    def check_new(self, name: str, partitions: int, replication_factor: int) -> None:
        """Raise TopicError if a topic with these settings cannot be created."""
        validate_topic_name(name)
        if name in self.topics or name in self._creating:
            raise TopicError(ErrorCode.topic_already_exists, f"topic {name!r} already exists")
        if partitions < 1:
            raise TopicError(
                ErrorCode.invalid_partitions, f"number of partitions must be >= 1, got {partitions}"
            )
        if replication_factor != 1:
            raise TopicError(
                ErrorCode.invalid_replication_factor,
                f"replication factor {replication_factor} is impossible on this single-node "
                "broker: use 1 (or -1 for the default)",
            )

    def check_configs(self, configs: dict[str, str | None]) -> dict[str, str]:
        """Validated overrides; TopicError(INVALID_CONFIG) names the offending key."""
        try:
            return validate(configs)
        except ConfigError as exc:
            raise TopicError(exc.code, str(exc)) from None

    def create(
        self, name: str, partitions: int, configs: dict[str, str] | None = None
    ) -> asyncio.Task[Topic]:
        """Create a topic; the task yields it once its creation is durable (it is
        visible from then on), or fails with the OSError that kept it from being."""
        self.check_new(name, partitions, 1)
        clean = self.check_configs(dict(configs or {}))
        topic = self._build(name, uuid.uuid4(), partitions, clean)
        task = asyncio.ensure_future(self._publish(topic, self._persist(also=topic)))
        self._creating[name] = topic, task
        return task

    async def _publish(self, topic: Topic, written: Awaitable[None]) -> Topic:
        try:
            await written
        except BaseException:
            for partition in topic.partitions:
                partition.discard()
            raise
        finally:
            del self._creating[topic.name]
        self.topics[topic.name] = topic
        return topic

    def creating(self, name: str) -> asyncio.Task[Topic] | None:
        """The creation of topic ``name`` in progress, if there is one."""
        entry = self._creating.get(name)
        return entry[1] if entry is not None else None

    def set_configs(self, name: str, configs: dict[str, str]) -> Awaitable[None]:
        """Replace a topic's overrides (already validated); the log follows at once, the
        awaitable completes once the change is durable."""
        topic = self.topics[name]
        topic.configs = dict(configs)
        self._apply_configs(topic)
        return self._persist()

    def add_partitions(self, name: str, total: int) -> Awaitable[None]:
        """Grow a topic to ``total`` partitions; the awaitable completes once durable."""
        topic = self.topics[name]
        if total <= len(topic.partitions):
            raise TopicError(
                ErrorCode.invalid_partitions,
                f"topic {name!r} has {len(topic.partitions)} partitions; the new count must "
                f"be larger, got {total}",
            )
        for index in range(len(topic.partitions), total):
            # A directory left behind by an older topic of this name must not be reused.
            shutil.rmtree(self._data_dir / f"{name}-{index}", ignore_errors=True)
            topic.partitions.append(self._open_partition(topic, index))
        return self._persist()

    async def remove(self, name: str) -> list[tuple[PartitionLog, Path]]:
        """Forget a topic durably and move its directories aside (so a new topic of the
        same name starts empty); returns each partition with its directory's new path,
        for the caller to close and delete once nothing uses them."""
        topic = self.topics.pop(name)
        await self._persist()
        moved = []
        for partition in topic.partitions:
            target = partition.directory.with_name(
                f"{partition.directory.name}.{uuid.uuid4().hex}{DELETING_SUFFIX}"
            )
            partition.directory.rename(target)
            moved.append((partition, target))
        return moved

    def _persist(self, also: Topic | None = None) -> asyncio.Future[None]:
        """Write topics.json as the topics are now (with the ones being created, and
        ``also``): a snapshot taken here, written off the loop."""
        being_created = [topic for topic, _ in self._creating.values()]
        listed = [*self.topics.values(), *being_created, *([also] if also else [])]
        return write_json_off_loop(
            self._data_dir / METADATA_FILE,
            {
                "topics": [
                    {
                        "name": t.name,
                        "id": str(t.topic_id),
                        "partitions": len(t.partitions),
                        "configs": dict(t.configs),
                    }
                    for t in listed
                ]
            },
        )

    def all_partitions(self) -> list[PartitionLog]:
        return [p for t in self.topics.values() for p in t.partitions]

    def close(self, durably: bool = True) -> None:
        for topic, _ in self._creating.values():
            for partition in topic.partitions:
                partition.discard()
        for partition in self.all_partitions():
            if durably:
                partition.close()
            else:
                partition.discard()
