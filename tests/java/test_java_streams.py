"""Kafka Streams 4.4.0 with processing.guarantee=exactly_once_v2 on ``onceflow broker``
(and on Apache Kafka, the reference): orders mapped to payments and counted per
customer, SIGKILLed inside an open transaction and restarted on an empty state dir, so
the counts can only come back through the compacted changelog."""

from __future__ import annotations

import struct
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from onceflow.kafka_admin import create_topics

from .conftest import Target, read_topic
from .java_programs import JavaProgram

pytestmark = pytest.mark.java

ORDERS, CUSTOMERS = 150, 5
FINISH_TIMEOUT = 90.0


def produce_orders(bootstrap: str, topic: str) -> dict[str, int]:
    """Orders keyed by customer; returns how many each customer placed."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    placed: Counter[str] = Counter()
    for i in range(ORDERS):
        customer = f"customer-{i % CUSTOMERS}"
        producer.produce(topic, key=customer, value=f"order-{i}:{i * 7 % 100}")
        placed[customer] += 1
    assert producer.flush(30) == 0
    return dict(placed)


def committed_counts(bootstrap: str, topic: str) -> dict[str, list[int]]:
    """Each customer's count updates as a read_committed consumer sees them, in order."""
    counts: dict[str, list[int]] = defaultdict(list)
    for message in read_topic(bootstrap, topic, "read_committed"):
        counts[message.key().decode()].append(int(message.value()))
    return dict(counts)


def committed_updates(bootstrap: str, topic: str) -> int:
    return sum(len(updates) for updates in committed_counts(bootstrap, topic).values())


def wait_for_counts(bootstrap: str, topic: str, placed: dict[str, int]) -> None:
    deadline = time.monotonic() + FINISH_TIMEOUT
    while True:
        last = {c: updates[-1] for c, updates in committed_counts(bootstrap, topic).items()}
        if last == placed:
            return
        over = {c: n for c, n in last.items() if n > placed.get(c, 0)}
        assert not over, f"orders counted twice: final counts {placed}, committed {last}"
        assert time.monotonic() < deadline, f"final counts {placed}, committed so far {last}"


def test_streams_exactly_once_across_a_sigkill(
    target: Target, java: Callable[..., JavaProgram], topic: str, tmp_path: Path
) -> None:
    bootstrap = target.bootstrap
    orders, payments, counts = f"{topic}-orders", f"{topic}-payments", f"{topic}-counts"
    application = f"{topic}-app"
    create_topics(bootstrap, orders, payments, counts, partitions=3)
    placed = produce_orders(bootstrap, orders)
    args = [
        "--bootstrap", bootstrap, "--application-id", application, "--orders", orders,
        "--payments", payments, "--counts", counts,
    ]  # fmt: skip

    first = java("OrdersStreamsApp", *args, "--state-dir", str(tmp_path / "state-1"),
                 "--pause-after", "70")  # fmt: skip
    first.wait_for("paused")
    # The stream thread is stuck inside its transaction; the producer's sender thread
    # still ships what was sent so far. Kill once the open transaction holds updates.
    deadline = time.monotonic() + FINISH_TIMEOUT
    while len(read_topic(bootstrap, counts)) == committed_updates(bootstrap, counts):
        assert time.monotonic() < deadline, "no count update of the open transaction arrived"
    first.kill()
    assert committed_updates(bootstrap, counts) < ORDERS, "killed before all was counted"

    # A fresh state dir: the restarted instance must restore the store from the changelog.
    second = java("OrdersStreamsApp", *args, "--state-dir", str(tmp_path / "state-2"))
    wait_for_counts(bootstrap, counts, placed)
    second.resume()
    events = second.finish()
    assert not [e for e in events if e["event"] == "error"]

    paid = Counter(m.value().decode() for m in read_topic(bootstrap, payments, "read_committed"))
    assert sorted(paid) == sorted(f"payment-for:order-{i}:{i * 7 % 100}" for i in range(ORDERS)), (
        "one payment per order"
    )
    assert set(paid.values()) == {1}, "no payment twice"

    # Exactly once: every count update committed once, none lost, none counted twice.
    assert committed_counts(bootstrap, counts) == {
        customer: list(range(1, n + 1)) for customer, n in placed.items()
    }

    changelog = f"{application}-{'order-counts'}-changelog"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, changelog)
    config = admin.describe_configs([resource])[resource].result(timeout=30)
    assert config["cleanup.policy"].value == "compact"
    stored: dict[str, int] = {}
    for message in read_topic(bootstrap, changelog, "read_committed"):
        stored[message.key().decode()] = struct.unpack(">q", message.value()[-8:])[0]
    assert stored == placed
