"""Faults only a replicated cluster has: single Apache Kafka nodes killed or paused by
the role the protocol gives them for the run (a partition leader, the group or the
transaction coordinator, a follower). Each killed node is restarted on its data once
the cluster has moved on without it, and the run goes on against the healed cluster."""

from __future__ import annotations

import time
from collections.abc import Callable

from onceflow.testing.kafka import KafkaCluster, KafkaNode
from onceflow.verify.faults.registry import Capability, Fault, FaultContext, register

CLUSTER = frozenset({Capability.CLIENTS, Capability.CLUSTER})
#: How long the cluster may take to elect a new leader or coordinator, or shrink an ISR.
MOVE_SECONDS = 45.0
#: How long both followers lag before the leader dies (well under replica.lag.time.max.ms,
#: so they stay in the ISR and one of them takes over without what it never fetched).
LAG_SECONDS = 2.0


def _parts(ctx: FaultContext) -> tuple[KafkaCluster, str, str, str]:
    if ctx.cluster is None or ctx.workload is None:
        raise RuntimeError("cluster faults need a cluster target and a running workload")
    w = ctx.workload
    topic = w.input_topic if w.eos_sink else w.output_topic
    return ctx.cluster, topic, w.group, w.transactional_id


def _wait_moved(what: str, current: Callable[[], KafkaNode], old: KafkaNode) -> KafkaNode:
    deadline = time.monotonic() + MOVE_SECONDS
    while time.monotonic() < deadline:
        try:
            node = current()
            if node.node_id != old.node_id:
                return node
        except (LookupError, OSError):
            pass  # no leader or coordinator yet, or the node asked went down
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not move off node {old.node_id} in {MOVE_SECONDS:.0f}s")


def _kill_and_restart(cluster: KafkaCluster, what: str, find: Callable[[], KafkaNode]) -> str:
    node = find()
    pid = node.pid
    node.kill()
    moved = _wait_moved(what, find, node)
    node.start()
    cluster.wait_ready()
    return (
        f"node {node.node_id} ({what}, pid {pid}) killed with SIGKILL; node "
        f"{moved.node_id} took over; node {node.node_id} restarted on its data"
    )


def _kill_leader(ctx: FaultContext) -> str:
    cluster, topic, _, _ = _parts(ctx)
    return _kill_and_restart(cluster, f"leader of {topic}[0]", lambda: cluster.leader(topic))


def _kill_group_coordinator(ctx: FaultContext) -> str:
    cluster, _, group, _ = _parts(ctx)
    return _kill_and_restart(
        cluster, f"coordinator of group {group}", lambda: cluster.group_coordinator(group)
    )


def _kill_transaction_coordinator(ctx: FaultContext) -> str:
    cluster, _, _, transactional_id = _parts(ctx)
    return _kill_and_restart(
        cluster,
        f"coordinator of transactional id {transactional_id}",
        lambda: cluster.transaction_coordinator(transactional_id),
    )


def _pause_follower(ctx: FaultContext) -> str:
    cluster, topic, _, _ = _parts(ctx)
    follower = cluster.followers(topic)[0]
    follower.pause()
    try:
        shrunk = cluster.wait_for_isr(topic, 0, 2, timeout=MOVE_SECONDS)
    except TimeoutError:
        follower.resume()
        ctx.misses["follower-pause"] = f"node {follower.node_id} never left the ISR"
        return f"node {follower.node_id} paused but never left the ISR of {topic}[0]"
    follower.resume()
    back = cluster.wait_for_isr(topic, 0, 3, timeout=MOVE_SECONDS * 2)
    return (
        f"follower node {follower.node_id} of {topic}[0] SIGSTOPped until the ISR shrank "
        f"to {sorted(shrunk)}, then resumed; ISR back to {sorted(back)}"
    )


def _follower_never_left(ctx: FaultContext) -> str | None:
    return ctx.misses.get("follower-pause")


def _kill_lagging_leader(ctx: FaultContext) -> str:
    cluster, topic, _, _ = _parts(ctx)
    leader = cluster.leader(topic)
    followers = cluster.followers(topic)
    for follower in followers:
        follower.pause()
    try:
        time.sleep(LAG_SECONDS)  # the fault is the lag itself: acks=1 answers go out
        leader.kill()
    finally:
        for follower in followers:
            follower.resume()
    moved = _wait_moved(f"leader of {topic}[0]", lambda: cluster.leader(topic), leader)
    leader.start()
    cluster.wait_ready()
    return (
        f"both followers of {topic}[0] paused {LAG_SECONDS:.0f}s, leader node "
        f"{leader.node_id} killed with SIGKILL, node {moved.node_id} took over"
    )


register(
    Fault(
        "leader-kill",
        "leader of an output partition killed with SIGKILL mid-stream, restarted",
        "live",
        requires=CLUSTER,
        inject=_kill_leader,
    )
)
register(
    Fault(
        "group-coordinator-kill",
        "the group's coordinator killed with SIGKILL mid-stream, restarted",
        "live",
        requires=CLUSTER,
        inject=_kill_group_coordinator,
    )
)
register(
    Fault(
        "txn-coordinator-kill",
        "the transactional id's coordinator killed with SIGKILL mid-stream, restarted",
        "live",
        requires=CLUSTER,
        inject=_kill_transaction_coordinator,
    )
)
register(
    Fault(
        "follower-pause",
        "a follower SIGSTOPped until it drops out of the ISR, then resumed",
        "live",
        requires=CLUSTER,
        inject=_pause_follower,
        missed=_follower_never_left,
    )
)
register(
    Fault(
        "lagging-leader-kill",
        "both followers paused, the leader killed: what only it had acknowledged is gone",
        "live",
        requires=CLUSTER,
        inject=_kill_lagging_leader,
    )
)
