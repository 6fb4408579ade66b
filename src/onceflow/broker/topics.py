"""Topics and their partitions, with the metadata that must survive a restart."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kio.schema.errors import ErrorCode

from onceflow.broker.log.atomic import read_json, write_json_atomically
from onceflow.broker.log.partition import LogConfig, PartitionLog

_LEGAL_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
METADATA_FILE = "topics.json"


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
    configs: dict[str, str] = field(default_factory=dict)


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
        on_visible: Callable[[], None],
    ) -> None:
        self._data_dir = data_dir
        self._log_config = log_config
        self._on_visible = on_visible
        self.topics: dict[str, Topic] = {}
        stored = read_json(data_dir / METADATA_FILE) or {"topics": []}
        for raw in stored["topics"]:
            self._open(raw["name"], uuid.UUID(raw["id"]), raw["partitions"], raw["configs"])

    def _open(self, name: str, topic_id: uuid.UUID, count: int, configs: dict[str, str]) -> Topic:
        partitions = [
            PartitionLog(self._data_dir / f"{name}-{index}", self._log_config, self._on_visible)
            for index in range(count)
        ]
        topic = Topic(name, topic_id, partitions, dict(configs))
        self.topics[name] = topic
        return topic

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
        if name in self.topics:
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

    def create(self, name: str, partitions: int, configs: dict[str, str] | None = None) -> Topic:
        self.check_new(name, partitions, 1)
        topic = self._open(name, uuid.uuid4(), partitions, configs or {})
        self._persist()
        return topic

    def _persist(self) -> None:
        write_json_atomically(
            self._data_dir / METADATA_FILE,
            {
                "topics": [
                    {
                        "name": t.name,
                        "id": str(t.topic_id),
                        "partitions": len(t.partitions),
                        "configs": t.configs,
                    }
                    for t in self.topics.values()
                ]
            },
        )

    def all_partitions(self) -> list[PartitionLog]:
        return [p for t in self.topics.values() for p in t.partitions]

    def close(self) -> None:
        for partition in self.all_partitions():
            partition.close()
