"""The Apache Kafka fixtures themselves: real JVMs that fail over, fence and recover as a
production cluster does, and helpers that name the nodes the protocol names."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from onceflow.kafka_admin import create_topics
from onceflow.testing import KafkaCluster
from onceflow.verify.replication import refusal

from .support import produce_acked, read_values

pytestmark = pytest.mark.kafka


def test_one_node_cluster_serves_transactions(onceflow_kafka: KafkaCluster, topic: str) -> None:
    create_topics(onceflow_kafka.bootstrap, NewTopic(topic, 1))
    producer = Producer(
        {"bootstrap.servers": onceflow_kafka.bootstrap, "transactional.id": f"{topic}-tx"}
    )
    producer.init_transactions(30)
    for keep in (True, False):
        producer.begin_transaction()
        producer.produce(topic, b"kept" if keep else b"aborted")
        producer.flush(30)
        (producer.commit_transaction if keep else producer.abort_transaction)(30)
    assert read_values(onceflow_kafka.bootstrap, topic) == [b"kept"]


def test_leader_killed_mid_stream_loses_nothing_with_acks_all(
    onceflow_kafka_cluster: KafkaCluster, topic: str
) -> None:
    cluster = onceflow_kafka_cluster
    create_topics(cluster.bootstrap, NewTopic(topic, 1, 3))
    cluster.wait_for_isr(topic, 0, 3)
    old_leader = cluster.leader(topic)

    acked = produce_acked(
        cluster.bootstrap,
        topic,
        [b"%d" % i for i in range(3000)],
        {"acks": "all", "enable.idempotence": True},
        after_acks=(1000, old_leader.kill),
    )
    assert len(acked) == 3000, "an idempotent acks=all producer gave up during failover"
    new_leader = cluster.leader(topic)
    assert new_leader.node_id != old_leader.node_id
    values = read_values(cluster.bootstrap, topic)
    assert sorted(values) == sorted(acked), "acknowledged records lost or duplicated"


def test_paused_follower_leaves_the_isr_and_rejoins(
    onceflow_kafka_cluster: KafkaCluster, topic: str
) -> None:
    cluster = onceflow_kafka_cluster
    create_topics(cluster.bootstrap, NewTopic(topic, 1, 3))
    cluster.wait_for_isr(topic, 0, 3)
    follower = cluster.followers(topic)[0]
    follower.pause()
    # The leader only shrinks the ISR of a partition that has traffic to replicate.
    produce_acked(cluster.bootstrap, topic, [b"x"] * 10, {"acks": "1"})
    isr = cluster.wait_for_isr(topic, 0, 2, timeout=60)
    assert follower.node_id not in isr
    follower.resume()
    assert cluster.wait_for_isr(topic, 0, 3, timeout=60) == {1, 2, 3}


def test_acks_all_below_min_insync_replicas_is_refused(
    onceflow_kafka_cluster: KafkaCluster, topic: str
) -> None:
    cluster = onceflow_kafka_cluster
    # Two replicas on nodes 1 and 2: killing node 2 leaves the controller quorum (nodes 1
    # and 3) able to shrink the ISR to {1}, below min.insync.replicas=2.
    create_topics(
        cluster.bootstrap,
        NewTopic(topic, 1, replica_assignment=[[1, 2]], config={"min.insync.replicas": "2"}),
    )
    cluster.wait_for_isr(topic, 0, 2)
    cluster.node(2).kill()
    leader = cluster.node(1)
    # The leader decides acks=all against its own view of the ISR: ask it.
    assert cluster.wait_for_isr(topic, 0, 1, timeout=60, via=leader) == {1}

    assert refusal(leader.bootstrap, topic, "all") == "NOT_ENOUGH_REPLICAS"
    # acks=1 asks only the leader, which still takes the write.
    assert len(produce_acked(leader.bootstrap, topic, [b"taken"], {"acks": "1"})) == 1


def test_node_stopped_cleanly_restarts_on_its_data(
    onceflow_kafka_cluster: KafkaCluster, topic: str
) -> None:
    cluster = onceflow_kafka_cluster
    create_topics(cluster.bootstrap, NewTopic(topic, 1, 3))
    cluster.wait_for_isr(topic, 0, 3)
    before = produce_acked(cluster.bootstrap, topic, [b"before"] * 50, {"acks": "all"})
    leader = cluster.leader(topic)
    assert leader.stop(), f"controlled shutdown failed:\n{leader.log_tail()}"
    during = produce_acked(cluster.bootstrap, topic, [b"during"] * 50, {"acks": "all"})
    leader.start()
    cluster.wait_ready()
    # The restarted node catches up from the others and is back in sync.
    assert leader.node_id in cluster.wait_for_isr(topic, 0, 3, timeout=60)
    assert sorted(read_values(cluster.bootstrap, topic)) == sorted(before + during)


def test_coordinator_helpers_name_the_nodes_clients_use(
    onceflow_kafka_cluster: KafkaCluster, topic: str
) -> None:
    cluster = onceflow_kafka_cluster
    group = f"{topic}-group"
    create_topics(cluster.bootstrap, NewTopic(topic, 1, 3))
    # The coordinator a consumer group's description reports is the one we name.
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group})
    consumer.subscribe([topic])
    deadline = time.monotonic() + 60
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(0.2)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    described = admin.describe_consumer_groups([group])[group].result(30)
    consumer.close()
    assert described.coordinator.id == cluster.group_coordinator(group).node_id

    # Killing a transactional id's coordinator moves it to another node.
    transactional_id = f"{topic}-tx"
    coordinator = cluster.transaction_coordinator(transactional_id)
    coordinator.kill()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if cluster.transaction_coordinator(transactional_id).node_id != coordinator.node_id:
                break
        except (LookupError, OSError):
            pass
        time.sleep(0.2)
    moved = cluster.transaction_coordinator(transactional_id)
    assert moved.node_id != coordinator.node_id and moved.running
