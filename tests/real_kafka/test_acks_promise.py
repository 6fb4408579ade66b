"""The acks / min.insync.replicas promise measured on a real 3-node Kafka cluster."""

from __future__ import annotations

import pytest

from onceflow.testing import KafkaCluster
from onceflow.verify.replication import measure

pytestmark = pytest.mark.kafka


def test_acks_one_loses_and_acks_all_with_two_insync_replicas_does_not(
    onceflow_kafka_cluster: KafkaCluster,
) -> None:
    outcomes = {
        (o.acks, o.min_insync_replicas): o
        for o in measure(onceflow_kafka_cluster, [("1", 2), ("all", 2), ("all", 1)])
    }
    acks_one = outcomes["1", 2]
    assert acks_one.acknowledged > 0 and acks_one.lost > 0, (
        f"acks=1 should lose what only the dead leader had: {acks_one}"
    )
    assert acks_one.below_min_isr == "accepted"  # acks=1 ignores min.insync.replicas

    safe = outcomes["all", 2]
    assert safe.acknowledged == safe.sent and safe.lost == 0, safe
    assert safe.below_min_isr == "NOT_ENOUGH_REPLICAS", safe
    assert safe.holds

    one_copy = outcomes["all", 1]
    assert one_copy.lost == 0, one_copy
    # min.insync.replicas=1 lets acks=all be acknowledged by a lone leader.
    assert one_copy.below_min_isr == "accepted", one_copy
