"""Who holds a runner's identity: the group coordinator's answer, on a real broker."""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Consumer

from onceflow.kafka_admin import create_topics
from onceflow.processing.membership import (
    Membership,
    classify,
    connection_settings,
    membership,
)

JOIN_SECONDS = 30.0


def joined(settings: dict[str, Any], topic: str) -> Consumer:
    """A consumer subscribed to ``topic`` that has its assignment."""
    consumer = Consumer(settings)
    consumer.subscribe([topic])
    deadline = time.monotonic() + JOIN_SECONDS
    while not consumer.assignment():
        assert time.monotonic() < deadline, "the consumer got no assignment"
        consumer.poll(0.1)
    return consumer


def test_a_restart_with_the_same_instance_id_replaces_the_old_member(onceflow_broker: Any) -> None:
    topic, group = f"members-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    create_topics(onceflow_broker.bootstrap, topic, partitions=2)
    settings = {
        "bootstrap.servers": onceflow_broker.bootstrap, "group.id": group,
        "group.instance.id": "instance-a", "session.timeout.ms": 6000,
    }  # fmt: skip
    old = joined(settings, topic)
    try:
        assert membership(settings, old.memberid(), timeout=10) is Membership.MEMBER
        new = joined(settings, topic)
        try:
            assert membership(settings, new.memberid(), timeout=10) is Membership.MEMBER
            assert membership(settings, old.memberid(), timeout=10) is Membership.REPLACED
            # A consumer that has lost its member id, too, finds its identity taken.
            assert membership(settings, "", timeout=10) is Membership.REPLACED
            # An instance id the group does not hold is free to join.
            other = {**settings, "group.instance.id": "instance-b"}
            assert membership(other, "", timeout=10) is Membership.GONE
        finally:
            new.close()
    finally:
        old.close()


def test_classify_static_and_dynamic_members() -> None:
    members = [("a-2", "a"), ("d-1", None)]
    assert classify(members, "a-2", "a") is Membership.MEMBER
    assert classify(members, "a-1", "a") is Membership.REPLACED
    assert classify(members, "b-1", "b") is Membership.GONE
    assert classify(members, "d-1", None) is Membership.MEMBER
    assert classify(members, "d-0", None) is Membership.GONE
    assert classify(members, "", None) is Membership.GONE


def test_connection_settings_keep_what_reaches_the_cluster_only() -> None:
    settings = {
        "bootstrap.servers": "b:9092", "security.protocol": "SASL_SSL",
        "sasl.username": "app", "ssl.ca.location": "ca.pem", "client.id": "c",
        "group.id": "g", "group.instance.id": "i", "isolation.level": "read_committed",
        "enable.auto.commit": False, "session.timeout.ms": 6000,
    }  # fmt: skip
    assert connection_settings(settings) == {
        "bootstrap.servers": "b:9092", "security.protocol": "SASL_SSL",
        "sasl.username": "app", "ssl.ca.location": "ca.pem", "client.id": "c",
    }  # fmt: skip
