"""Fixtures of the Java tests: start Java programs, read topics back with confluent-kafka."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from onceflow.testing import BrokerProcess, KafkaCluster

from .java_programs import JavaProgram

Target = BrokerProcess | KafkaCluster

READ_TIMEOUT = 30.0


@pytest.fixture(params=["onceflow", pytest.param("kafka", marks=pytest.mark.kafka)])
def target(request: pytest.FixtureRequest) -> Target:
    """Where a Java test runs: the module's embedded broker process, then a 1-node Apache
    Kafka, so every program is also checked against the reference broker."""
    if request.param == "onceflow":
        return request.getfixturevalue("shared_broker")
    return request.getfixturevalue("onceflow_kafka")


@pytest.fixture
def java(tmp_path: Path) -> Iterator[Callable[..., JavaProgram]]:
    """Start a Java program: ``java("CommitLoop", "--topic", t, ...)``; every one still
    running at the end of the test is SIGKILLed."""
    started: list[JavaProgram] = []

    def start(main: str, *args: str) -> JavaProgram:
        program = JavaProgram(main, list(args), tmp_path / f"{main}-{len(started)}.log")
        started.append(program)
        return program

    yield start
    for program in started:
        program.kill()


def read_topic(bootstrap: str, topic: str, isolation: str = "read_uncommitted") -> list[Message]:
    """Every record a consumer with ``isolation`` can read now, partition by partition.

    It reads until its position on each partition reaches the end ListOffsets reports,
    so transaction markers (which take offsets but are never delivered) are passed too.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"java-test-reader-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        consumer.assign(partitions)
        ends = {
            tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions
        }
        messages: list[Message] = []
        deadline = time.monotonic() + READ_TIMEOUT
        while True:
            positions = {tp.partition: tp.offset for tp in consumer.position(partitions)}
            if all(ends[p] == 0 or positions[p] >= ends[p] for p in ends):
                return messages
            assert time.monotonic() < deadline, f"read {len(messages)} of {topic} in time"
            for message in consumer.consume(500, timeout=0.2):
                if message.error() is not None:
                    raise KafkaException(message.error())
                messages.append(message)
    finally:
        consumer.close()
