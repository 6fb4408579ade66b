"""Is this runner still the group's member, or did a newer runner take its identity?

A runner's identity (its ``group.instance.id`` and its transactional id) outlives its
process, so a restarted instance and a paused old one (a zombie) share it. Before a
runner builds a new transactional producer (which fences whoever else holds the id) or
joins its group again (which, for a static member, takes the membership away from
whoever holds it), it asks the group coordinator who holds its membership now, so that
a zombie steps aside instead of fencing its own successor back.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from onceflow.client_logging import client_config

# The settings an admin client shares with the consumer: where the brokers are and how
# to reach them. The consumer's own (group.id, fetch sizes, ...) would be refused or
# logged as misplaced by librdkafka.
_CONNECTION_KEYS = ("bootstrap.servers", "metadata.broker.list", "client.id",
                    "client.dns.lookup", "security.protocol", "broker.address.family",
                    "connections.max.idle.ms", "enable.ssl.certificate.verification",
                    "oauth_cb", "error_cb")  # fmt: skip
# What a coordinator answers while it moves to another broker or loads the group there.
COORDINATOR_MOVING = frozenset(
    {
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
    }
)
RETRY_BACKOFF_SECONDS = 0.2
_CONNECTION_PREFIXES = ("ssl.", "sasl.", "socket.", "reconnect.", "retry.backoff", "https.")


class Membership(enum.Enum):
    """What the group coordinator says about one runner's membership."""

    #: The runner's consumer is the group's member for its identity.
    MEMBER = "member"
    #: Another consumer holds the runner's ``group.instance.id``: a newer runner with
    #: the same identity took over, and this one is a zombie.
    REPLACED = "replaced"
    #: The group has no member for the runner (its session expired, or it left):
    #: nobody else holds its identity, so it may join again.
    GONE = "gone"


def connection_settings(consumer_settings: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``consumer_settings`` any client of the same cluster needs."""
    return {
        key: value
        for key, value in consumer_settings.items()
        if key in _CONNECTION_KEYS or key.startswith(_CONNECTION_PREFIXES)
    }


def classify(
    members: list[tuple[str, str | None]], member_id: str, instance_id: str | None
) -> Membership:
    """Judge ``member_id`` (this consumer's, "" if it has none) with ``instance_id``
    (its ``group.instance.id``, None for a dynamic member) against the group's
    ``members`` as (member id, group instance id) pairs."""
    if instance_id is not None:
        holders = [mid for mid, iid in members if iid == instance_id]
        if not holders:
            return Membership.GONE
        return Membership.MEMBER if member_id in holders else Membership.REPLACED
    return Membership.MEMBER if member_id and member_id in dict(members) else Membership.GONE


def membership(
    consumer_settings: Mapping[str, Any], member_id: str, *, timeout: float
) -> Membership:
    """Ask the group coordinator (DescribeGroups) whether the consumer with
    ``member_id``, configured by ``consumer_settings``, is still its group's member.
    A coordinator that is moving or loading (a broker failover) is asked again until
    ``timeout``; raises ``KafkaException`` if it cannot be asked within it."""
    group = str(consumer_settings["group.id"])
    instance = consumer_settings.get("group.instance.id")
    admin = AdminClient(client_config(connection_settings(consumer_settings)))
    deadline = time.monotonic() + timeout
    try:
        while True:
            future = admin.describe_consumer_groups([group], request_timeout=timeout)[group]
            try:
                description = future.result(timeout=timeout)
                break
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() not in COORDINATOR_MOVING or time.monotonic() > deadline:
                    raise
            time.sleep(RETRY_BACKOFF_SECONDS)
    finally:
        admin.poll(0)  # hands the client's queued log lines to Python logging
    members = [(m.member_id, m.group_instance_id) for m in description.members]
    return classify(members, member_id, None if instance is None else str(instance))
