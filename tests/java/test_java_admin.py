"""Kafka's Java AdminClient (kafka-clients 4.4.0) through an operator's tour, on
``onceflow broker`` and on Apache Kafka: both must answer the same, once the values that
are allowed to differ (producer ids, node ids) are normalised."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from onceflow.testing import KafkaCluster

from .conftest import Target
from .java_programs import Event, JavaProgram

pytestmark = pytest.mark.java

NODE = "<node id>"
PRODUCER_ID = "<producer id>"


def normalised(event: Event) -> Event:
    """The event with node ids and producer ids replaced by placeholders."""

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if key in ("coordinator", "leader"):
            assert isinstance(value, int) and value >= 0
            return NODE
        if key == "producer_id":
            assert isinstance(value, int) and value >= 0
            return PRODUCER_ID
        return value

    return walk(event)


def expected_tour(prefix: str, *, epoch_per_transaction: bool) -> list[Event]:
    """What the tour prints. ``epoch_per_transaction``: Apache Kafka 4.x clusters run
    transaction.version 2 (KIP-890), where every commit bumps the producer epoch and
    restarts its sequences; onceflow serves transaction.version 1 (EndTxn v0-1), where
    the epoch holds across transactions. That is the one difference the tour finds."""
    epoch, last_sequence = (1, 0) if epoch_per_transaction else (0, 3)
    compacted, plain = f"{prefix}-compacted", f"{prefix}-plain"
    single = {"replicas": 1, "isr": 1, "leader": NODE}
    config = {
        "cleanup.policy": {"source": "DYNAMIC_TOPIC_CONFIG", "value": "compact"},
        "retention.ms": {"source": "DEFAULT_CONFIG", "value": "604800000"},
    }
    altered = {**config, "retention.ms": {"source": "DYNAMIC_TOPIC_CONFIG", "value": "123456"}}
    txn_id, group = f"{prefix}-txn", f"{prefix}-group"
    return [
        {"event": "created", "topics": [compacted, plain]},
        {"event": "created-again", "error": "TopicExistsException"},
        {"event": "listed", "topics": [compacted, plain]},
        *sorted(
            (
                {
                    "event": "described-topic",
                    "name": name,
                    "internal": False,
                    "partitions": [{**single, "partition": p} for p in range(count)],
                }
                for name, count in ((compacted, 3), (plain, 1))
            ),
            key=lambda e: e["name"],
        ),
        {"event": "config", "entries": config},
        {"event": "config-altered", "entries": altered},
        {
            "event": "transactions",
            "listed": [{"state": "Ongoing", "id": txn_id, "producer_id": PRODUCER_ID}],
        },
        {
            "event": "transaction",
            "state": "Ongoing",
            "producer_id": PRODUCER_ID,
            "epoch": epoch,
            "timeout_ms": 60000,
            "partitions": [f"{plain}-0"],
            "coordinator": NODE,
        },
        {
            "event": "producers",
            "partition": f"{plain}-0",
            # Offsets 0-2 the committed transaction, 3 its marker, 4 the open one's record.
            "active": [
                {
                    "txn_start_offset": 4,
                    "producer_id": PRODUCER_ID,
                    "epoch": epoch,
                    "last_sequence": last_sequence,
                }
            ],
        },
        {
            "event": "group-live",
            "description": {
                "assignor": "range",
                "state": "Stable",
                "members": [{"client_id": f"consumer-{group}-1", "assignment": [f"{plain}-0"]}],
                "type": "Classic",
                "coordinator": NODE,
            },
        },
        {"event": "groups", "listed": [f"{group}:consumer"]},
        {
            "event": "group-empty",
            "description": {
                "assignor": "",
                "state": "Empty",
                "members": [],
                "type": "Classic",
                "coordinator": NODE,
            },
        },
        {"event": "group-offsets", "offsets": {f"{plain}-0": 2}},
        {"event": "deleted", "remaining": []},
    ]


def test_admin_client_tour(target: Target, java: Callable[..., JavaProgram], topic: str) -> None:
    events = java("AdminTour", "--bootstrap", target.bootstrap, "--prefix", topic).finish()
    topics = [normalised(e) for e in events if e["event"] == "described-topic"]
    rest = [normalised(e) for e in events if e["event"] != "described-topic"]
    got = rest[:3] + sorted(topics, key=lambda e: e["name"]) + rest[3:]
    want = expected_tour(topic, epoch_per_transaction=isinstance(target, KafkaCluster))
    differing = [(h, w) for h, w in zip(got, want, strict=False) if h != w]
    assert not differing, "\n".join(f"got  {h}\nwant {w}" for h, w in differing)
    assert len(got) == len(want)
