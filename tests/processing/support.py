"""Helpers of the processing tests: topics, running the worker, reading a topic."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

WORKER = Path(__file__).with_name("worker.py")
DEADLINE = 30.0


def create_topics(bootstrap: str, *topics: tuple[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, parts, 1) for name, parts in topics])
    for future in futures.values():
        future.result(timeout=DEADLINE)


@dataclass
class WorkerRun:
    """Arguments of one pipeline worker; ``run`` starts it and waits for it."""

    bootstrap: str
    guarantee: str
    db: str
    source: str
    payments: str
    group: str
    eos_sink: bool = False
    extra: list[str] = field(default_factory=list)

    def command(self, crash_at: str | None = None) -> list[str]:
        command = [
            sys.executable, str(WORKER), "--bootstrap", self.bootstrap,
            "--guarantee", self.guarantee, "--db", self.db, "--source", self.source,
            "--payments", self.payments, "--group", self.group, *self.extra,
        ]  # fmt: skip
        if self.eos_sink:
            command.append("--eos-sink")
        if crash_at:
            command += ["--crash-at", crash_at]
        return command

    def run(
        self, crash_at: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(crash_at), capture_output=True, text=True, timeout=timeout, check=False
        )

    def run_clean(self) -> dict[str, Any]:
        done = self.run()
        assert done.returncode == 0, f"worker failed ({done.returncode}):\n{done.stderr[-3000:]}"
        return json.loads(done.stdout.strip().splitlines()[-1])


def read_topic(bootstrap: str, topic: str, isolation: str = "read_committed") -> list[Any]:
    """Every record of ``topic`` (all partitions) visible with ``isolation``: read until
    each position reaches the end ListOffsets reports for that isolation level."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    if metadata.error is not None:
        raise KafkaException(metadata.error)
    tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
    marks = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10) for tp in tps}
    # An empty partition is done before the reader ever gets a position on it.
    todo = [tp for tp in tps if marks[tp.partition][1] > marks[tp.partition][0]]
    values: list[Any] = []
    deadline = time.monotonic() + DEADLINE
    try:
        consumer.assign(todo)
        while todo and time.monotonic() < deadline:
            positions = {tp.partition: tp.offset for tp in consumer.position(todo)}
            if all(positions[tp.partition] >= marks[tp.partition][1] for tp in todo):
                break
            for message in consumer.consume(num_messages=500, timeout=0.2):
                if message.error():
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(message.error())
                values.append(message)
        else:
            if todo:
                raise AssertionError(f"reader did not reach {marks} within {DEADLINE}s")
    finally:
        consumer.close()
    return values


def payment_ids(bootstrap: str, topic: str) -> Counter[str]:
    """order id -> how many payment events ``topic`` holds for it (read_committed)."""
    return Counter(json.loads(m.value())["order_id"] for m in read_topic(bootstrap, topic))
