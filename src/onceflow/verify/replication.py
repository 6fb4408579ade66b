"""What acks and min.insync.replicas promise on a replicated Kafka cluster, measured.

"acks=all waits for ISR confirmation, but its actual meaning still depends on
min.insync.replicas." Two experiments per (acks, min.insync.replicas) case, each on a
fresh topic with three replicas of one partition:

- **Leader lost right after acknowledging.** Both followers are paused (so they lag but
  stay in the ISR, as a slow disk or a GC pause would leave them), records are sent,
  the leader is SIGKILLed, the followers resume and one of them takes over; the old
  leader restarts and truncates to the new leader's log. Every acknowledged record
  that is not in the log afterwards is *lost*.
- **ISR below the minimum.** Two replicas on nodes 1 and 2; node 2 is killed until the
  ISR is {1}; one record is sent with ``retries=0``. With acks=all and
  min.insync.replicas=2 the broker must refuse it (NOT_ENOUGH_REPLICAS).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from onceflow.client_logging import client_config
from onceflow.kafka_admin import create_topics
from onceflow.testing.kafka import KafkaCluster

CASES = (("1", 1), ("1", 2), ("all", 1), ("all", 2))
# How long the paused followers lag before the leader is killed: well under
# replica.lag.time.max.ms, so they are still in the ISR and may be elected.
LAG_SECONDS = 2.0
DEADLINE = 90.0
# A paused follower still receives the answer to the fetch it had in flight (into its
# socket buffer) and appends it when resumed. Records must far outweigh one fetch
# answer (replica.fetch.max.bytes, 1 MiB) for the followers to really lag.
VALUE_BYTES = 8192
# The below-minimum probe: a produce the leader appended before it applied the shrink
# times out on the broker after request.timeout.ms; a few short tries outlast that.
PROBE_ATTEMPTS = 5
PROBE_TIMEOUTS = {"request.timeout.ms": 5000, "message.timeout.ms": 10000}


@dataclass(frozen=True)
class AcksOutcome:
    """One case's measurements."""

    acks: str
    min_insync_replicas: int
    sent: int
    acknowledged: int
    lost: int
    below_min_isr: str  # "accepted" or the error name the broker answered

    @property
    def holds(self) -> bool:
        """Whether the case kept Kafka's documented promise: acks=all with
        min.insync.replicas=2 loses nothing and refuses writes below the minimum."""
        if self.acks == "all" and self.min_insync_replicas >= 2:
            return self.lost == 0 and self.below_min_isr == "NOT_ENOUGH_REPLICAS"
        return True

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "holds": self.holds}


def measure(
    cluster: KafkaCluster, cases: Iterable[tuple[str, int]] = CASES, records: int = 2000
) -> list[AcksOutcome]:
    """Run both experiments for each case on ``cluster`` (3 nodes or more)."""
    if cluster.size < 3:
        raise ValueError("the acks experiments need a cluster of at least 3 nodes")
    return [_measure_case(cluster, acks, min_isr, records) for acks, min_isr in cases]


def _measure_case(cluster: KafkaCluster, acks: str, min_isr: int, records: int) -> AcksOutcome:
    sent, acknowledged, lost = leader_loss(cluster, acks, min_isr, records)
    cluster.heal()
    refusal = below_min_isr(cluster, acks, min_isr)
    cluster.heal()
    return AcksOutcome(acks, min_isr, sent, acknowledged, lost, refusal)


def _topic(kind: str, acks: str, min_isr: int) -> str:
    return f"onceflow-acks-{kind}-{acks}-{min_isr}-{uuid.uuid4().hex[:8]}"


def _producer(bootstrap: str, acks: str, **extra: object) -> Producer:
    return Producer(
        client_config(
            {
                "bootstrap.servers": bootstrap,
                "acks": acks,
                "enable.idempotence": False,
                "linger.ms": 0,
                "message.timeout.ms": int(DEADLINE * 1000),
                "queue.buffering.max.kbytes": 1 << 20,
                **extra,
            }
        )
    )


def leader_loss(
    cluster: KafkaCluster, acks: str, min_isr: int, records: int
) -> tuple[int, int, int]:
    """(sent, acknowledged, acknowledged but lost) when the leader dies while both
    followers lag."""
    topic = _topic("leader-loss", acks, min_isr)
    create_topics(
        cluster.bootstrap, NewTopic(topic, 1, 3, config={"min.insync.replicas": str(min_isr)})
    )
    cluster.wait_for_isr(topic, 0, 3)
    leader = cluster.leader(topic)
    followers = cluster.followers(topic)
    acked: set[bytes] = set()

    def delivered(err: KafkaError | None, message: object) -> None:
        if err is None:
            acked.add(message.value())  # type: ignore[attr-defined]

    half = records // 2
    # The first half is known to be on every replica before anything fails: it is sent
    # with acks=all whatever the case (an acks=1 answer says nothing about followers).
    synced = _producer(cluster.bootstrap, "all")
    for i in range(half):
        synced.produce(topic, _value(b"synced", i), on_delivery=delivered)
    synced.flush(DEADLINE)
    producer = _producer(cluster.bootstrap, acks)
    for follower in followers:
        follower.pause()
    try:
        for i in range(records - half):
            producer.produce(topic, _value(b"lagging", i), on_delivery=delivered)
        lag_until = time.monotonic() + LAG_SECONDS
        while time.monotonic() < lag_until:
            producer.poll(0.05)
        leader.kill()
    finally:
        for follower in followers:
            follower.resume()
    _wait_for_new_leader(cluster, topic, leader.node_id)
    # The old leader comes back, truncates to the new leader's log and rejoins the ISR.
    leader.start()
    cluster.wait_ready()
    cluster.wait_for_isr(topic, 0, 3, timeout=DEADLINE)
    producer.flush(DEADLINE)
    present = set(read_all(cluster.bootstrap, topic))
    return records, len(acked), len(acked - present)


def _value(kind: bytes, i: int) -> bytes:
    return (b"%s-%d:" % (kind, i)).ljust(VALUE_BYTES, b".")


def _wait_for_new_leader(cluster: KafkaCluster, topic: str, old: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            if cluster.leader(topic).node_id != old:
                return
        except (LookupError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"no new leader for {topic} within {DEADLINE:.0f} s")


def below_min_isr(cluster: KafkaCluster, acks: str, min_isr: int) -> str:
    """What a produce gets once the ISR has shrunk to one replica: "accepted" or the
    broker's error name."""
    topic = _topic("below-min-isr", acks, min_isr)
    # Replicas on nodes 1 and 2 only: with node 2 dead, nodes 1 and 3 still form the
    # controller quorum that shrinks the ISR.
    create_topics(
        cluster.bootstrap,
        NewTopic(
            topic, 1, replica_assignment=[[1, 2]], config={"min.insync.replicas": str(min_isr)}
        ),
    )
    cluster.wait_for_isr(topic, 0, 2)
    cluster.node(2).kill()
    # The leader decides acks=all against its own view of the ISR: ask it.
    cluster.wait_for_isr(topic, 0, 1, timeout=DEADLINE, via=cluster.node(1))
    return refusal(cluster.node(1).bootstrap, topic, acks)


def refusal(bootstrap: str, topic: str, acks: str) -> str:
    """What one record sent to ``topic``'s leader at ``bootstrap`` gets, with
    ``retries=0``: "accepted" or the broker's error name.

    Even the leader's metadata can show a shrunk ISR a moment before its replica manager
    applies it; a produce in that moment is appended, waits for the missing follower and
    times out (not acknowledged either). So it is sent again until the answer is a
    decision."""
    producer = _producer(bootstrap, acks, retries=0, **PROBE_TIMEOUTS)
    answer = "no answer"
    for _ in range(PROBE_ATTEMPTS):
        outcome: list[KafkaError | None] = []
        producer.produce(
            topic, b"below-min-isr", on_delivery=lambda e, _m, into=outcome: into.append(e)
        )
        producer.flush(DEADLINE)
        if not outcome:
            return "no answer"
        error = outcome[0]
        answer = "accepted" if error is None else error.name()
        if answer != "REQUEST_TIMED_OUT":
            return answer
    return answer


def read_all(bootstrap: str, topic: str) -> list[bytes]:
    """Every value of partition 0 of ``topic``, from the start to the end offset."""
    consumer = Consumer(
        client_config(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"onceflow-acks-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
            }
        )
    )
    try:
        end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)[1]
        consumer.assign([TopicPartition(topic, 0, 0)])
        values: list[bytes] = []
        deadline = time.monotonic() + DEADLINE
        position = 0
        while position < end and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is None:
                    values.append(message.value())
                    position = message.offset() + 1
        return values
    finally:
        consumer.close()
