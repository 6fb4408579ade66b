"""`onceflow verify` on a real 3-node Apache Kafka cluster, with the faults only a
cluster has: leaders and coordinators killed, followers paused out of the ISR."""

from __future__ import annotations

import pytest

from onceflow.guarantees import Guarantee
from onceflow.testing import KafkaCluster
from onceflow.verify import verify
from onceflow.verify.faults import applicable, cluster_target

pytestmark = pytest.mark.kafka

CLUSTER_FAULTS = [
    "leader-kill",
    "txn-coordinator-kill",
    "group-coordinator-kill",
    "follower-pause",
    "lagging-leader-kill",
]
ORDERS = 300


def test_cluster_faults_apply_only_to_a_cluster() -> None:
    on_cluster = {f.name for f in applicable(cluster_target(3))}
    assert set(CLUSTER_FAULTS) <= on_cluster
    assert "broker-kill" not in on_cluster  # there is no single broker process to kill


@pytest.mark.parametrize("fault", CLUSTER_FAULTS)
def test_exactly_once_holds_through_each_cluster_fault(
    onceflow_kafka_cluster: KafkaCluster, fault: str
) -> None:
    result = verify(Guarantee.EXACTLY_ONCE, [fault], orders=ORDERS, cluster=onceflow_kafka_cluster)
    assert result.target == "kafka-3-nodes"
    assert not result.inconclusive, result.inconclusive
    assert any(note.startswith(f"{fault}:") for note in result.notes), result.notes
    assert result.ok, result.summary()
