"""Several workers in one group: a rebalance in the middle of a run, and a zombie.

Each worker (worker.py) is its own process with its own ``group.instance.id``, so its
own transactional id; the group moves partitions between them while they process.
``--work-ms`` gives each record a processing cost so a run lasts long enough for a
second worker to join it midway, and ``--max-poll-records`` keeps polls small so the
rebalance lands while work is pending (an open transaction, uncommitted positions).

The workers share one database (PostgreSQL, or a SQLite file where a test says so):
the sinks stage rows and write them in one short transaction per commit, so a worker
holds no database lock between commits, and a paused one blocks nobody. Orders are keyed
by customer, so two workers never update the same balance row at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import NewTopic

from onceflow.examples.orders import make_orders, payment_counts, produce_orders
from onceflow.kafka_admin import create_topics
from onceflow.testing import BrokerProcess
from onceflow.testing.postgres import PostgresServer

from .support import (
    WorkerRun,
    check_database,
    committed_offsets,
    count_charges,
    end_offsets,
    finish,
    kill,
    stored_offsets,
    wait_until,
)

PARTITIONS = 4
ORDERS = make_orders(600)
ORDER_IDS = {o.order_id for o in ORDERS}
# Small polls, rare count-based commits: a transaction stays open across many polls.
PACING = ["--work-ms", "10", "--max-poll-records", "10", "--commit-every", "1000"]


def setup_group(
    broker: BrokerProcess, names: dict[str, str], guarantee: str, db: str, eos_sink: bool = False
) -> WorkerRun:
    create_topics(
        broker.bootstrap, NewTopic(names["orders"], PARTITIONS), NewTopic(names["payments"], 1)
    )
    produce_orders(broker.bootstrap, ORDERS, topic=names["orders"])
    return WorkerRun(
        broker.bootstrap, guarantee, db, names["orders"], names["payments"], names["group"],
        eos_sink=eos_sink,
    )  # fmt: skip


def all_committed(broker: BrokerProcess, names: dict[str, str], eos_db: str | None = None) -> bool:
    """Every order's position committed: in the group, or in ``eos_db`` (the database
    of an exactly-once sink) when given."""
    ends = end_offsets(broker.bootstrap, names["orders"], PARTITIONS)
    if eos_db is not None:
        stored = stored_offsets(eos_db)
        return [stored.get((names["orders"], p)) for p in range(PARTITIONS)] == ends
    return committed_offsets(broker.bootstrap, names["group"], names["orders"], PARTITIONS) == ends


def second_joins_midway(
    run: WorkerRun, db: str, commit_interval_ms: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start worker a; once it has produced payments or committed charges, start worker
    b. Return both workers' stats."""
    pacing = [*PACING, "--commit-interval-ms", str(commit_interval_ms)]
    first = run.start("--instance", "a", *pacing)
    second: subprocess.Popen[str] | None = None

    def under_way() -> bool:
        [produced] = end_offsets(run.bootstrap, run.payments, 1)
        return produced > 0 or count_charges(db) > 0

    try:
        wait_until(under_way, "a is under way", alive=[first])
        second = run.start("--instance", "b", *pacing)
        return finish(first), finish(second)
    finally:
        kill(first, second)


@pytest.mark.parametrize("eos_sink", [False, True], ids=["kafka-txn", "db-txn"])
def test_exactly_once_holds_across_a_rebalance(
    broker: BrokerProcess, names: dict[str, str], postgres_server: PostgresServer, eos_sink: bool
) -> None:
    db = postgres_server.new_database()
    run = setup_group(broker, names, "exactly-once", db, eos_sink)
    a, b = second_joins_midway(run, db, commit_interval_ms=500)
    assert a["revoked"], "a never gave up a partition: there was no rebalance"
    assert a["processed"] and b["processed"], f"one worker did all the work: {a} / {b}"
    # Plain INSERTs in the exactly-once sink: a record applied twice would have failed.
    check_database(db, ORDERS, complete=True)
    if not eos_sink:
        payments = payment_counts(broker.bootstrap, names["payments"])
        assert set(payments) == ORDER_IDS, "a payment was lost in the rebalance"
        assert max(payments.values()) == 1, "a payment was duplicated in the rebalance"
        assert all_committed(broker, names)


def test_at_least_once_revocation_commits_what_was_processed(
    broker: BrokerProcess, names: dict[str, str], postgres_server: PostgresServer
) -> None:
    db = postgres_server.new_database()
    run = setup_group(broker, names, "at-least-once", db)
    # Time-based commits 30 s apart: within the run only a revocation commits, so
    # anything it failed to commit would be processed again by the partition's new owner.
    a, b = second_joins_midway(run, db, commit_interval_ms=30_000)
    assert a["revoked"] and a["processed"] and b["processed"], f"no rebalance: {a} / {b}"
    payments = payment_counts(broker.bootstrap, names["payments"])
    assert set(payments) == ORDER_IDS, "at-least-once lost a payment in the rebalance"
    duplicates = sum(payments.values()) - len(payments)
    assert duplicates == 0, f"{duplicates} orders paid again: revocation did not commit"
    assert a["processed"] + b["processed"] == len(ORDERS)
    check_database(db, ORDERS, complete=True)
    assert all_committed(broker, names)


def stopped(pid: int) -> bool:
    """True once the process is stopped by a signal (state T in /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] in ("T", "t")


def test_zombie_cannot_commit_after_its_partitions_moved(
    broker: BrokerProcess, names: dict[str, str], postgres_server: PostgresServer
) -> None:
    db = postgres_server.new_database()
    run = setup_group(broker, names, "exactly-once", db)
    # a stops itself with its third transaction open: payments produced, ledger rows
    # committed, positions not yet sent. The transaction timeout is long so that only
    # the group generation (KIP-447), not the broker's timeout, can fence it.
    zombie = run.start(
        "--instance", "a", "--pause-at", "before_offsets:3", "--work-ms", "2",
        "--transaction-timeout-ms", "60000", "--idle", "3",
    )  # fmt: skip
    successor: subprocess.Popen[str] | None = None
    try:
        wait_until(lambda: stopped(zombie.pid), "a pauses", alive=[zombie])
        # b takes every partition once a's session (6 s) expires, and processes them.
        successor = run.start("--instance", "b", "--idle", "4")
        wait_until(lambda: all_committed(broker, names), "b commits every order", alive=[successor])
        os.kill(zombie.pid, signal.SIGCONT)
        zombie_stats = finish(zombie)
        successor_stats = finish(successor)
    finally:
        kill(zombie, successor)

    # The zombie's transaction did not commit, and the zombie knew it.
    assert zombie_stats["commits"] == 2, zombie_stats
    assert zombie_stats["errors"], f"the zombie's commit failed silently: {zombie_stats}"
    assert zombie_stats["aborts"] + zombie_stats["producer_rebuilds"] >= 1, zombie_stats
    assert successor_stats["processed"] > 0
    payments = payment_counts(broker.bootstrap, names["payments"])
    assert set(payments) == ORDER_IDS, "a payment was lost"
    assert max(payments.values()) == 1, "the zombie's stale payments became visible"
    check_database(db, ORDERS, complete=True)
    assert all_committed(broker, names)


@pytest.mark.parametrize(
    ("eos_sink", "pause_at"),
    [(False, "before_offsets:3"), (True, "before_commit:3")],
    ids=["kafka-txn", "db-txn"],
)
def test_zombie_of_a_restarted_instance_stops_instead_of_fencing_it_back(
    broker: BrokerProcess,
    names: dict[str, str],
    postgres_server: PostgresServer,
    eos_sink: bool,
    pause_at: str,
) -> None:
    db = postgres_server.new_database()
    run = setup_group(broker, names, "exactly-once", db, eos_sink)
    # Both are instance a: one identity, so one group.instance.id and one transactional
    # id, as a supervisor's restart of a process it wrongly thought dead would have.
    zombie = run.start("--instance", "a", "--pause-at", pause_at, "--work-ms", "2", "--idle", "3")
    successor: subprocess.Popen[str] | None = None
    try:
        wait_until(lambda: stopped(zombie.pid), "a pauses", alive=[zombie])
        successor = run.start("--instance", "a", "--idle", "4")
        wait_until(
            lambda: all_committed(broker, names, db if eos_sink else None),
            "the successor commits every order",
            alive=[successor],
        )
        os.kill(zombie.pid, signal.SIGCONT)
        _, zombie_err = zombie.communicate(timeout=60)
        successor_stats = finish(successor)
    finally:
        kill(zombie, successor)

    # The zombie stopped, saying why, instead of rebuilding its producer or rejoining...
    assert zombie.returncode == 1, zombie_err[-3000:]
    assert "InstanceFencedError: fenced by its own identity" in zombie_err, zombie_err[-3000:]
    # ...so its successor was never fenced back.
    assert successor_stats["producer_rebuilds"] == 0, successor_stats
    assert successor_stats["rejoins"] == 0 and successor_stats["errors"] == [], successor_stats
    assert successor_stats["processed"] > 0
    check_database(db, ORDERS, complete=True)
    if not eos_sink:
        payments = payment_counts(broker.bootstrap, names["payments"])
        assert set(payments) == ORDER_IDS, "a payment was lost"
        assert max(payments.values()) == 1, "the zombie's stale payments became visible"


class OffsetWatch:
    """Samples an exactly-once sink's stored offsets and fails if one ever moves back."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.latest: dict[tuple[str, int], int] = {}

    def sample(self) -> dict[tuple[str, int], int]:
        now = stored_offsets(self.db)
        for tp, offset in now.items():
            assert offset >= self.latest.get(tp, -1), (
                f"stored offset of {tp} moved back from {self.latest[tp]} to {offset}"
            )
        self.latest.update(now)
        return now


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_exactly_once_sink_fences_a_zombie(
    broker: BrokerProcess,
    names: dict[str, str],
    postgres_server: PostgresServer,
    tmp_path: Path,
    database: str,
) -> None:
    db = f"sqlite:{tmp_path / 'z.db'}" if database == "sqlite" else postgres_server.new_database()
    run = setup_group(broker, names, "exactly-once", db, eos_sink=True)
    ends = dict(enumerate(end_offsets(broker.bootstrap, names["orders"], PARTITIONS)))
    watch = OffsetWatch(db)

    def successor_stored_everything() -> bool:
        stored = watch.sample()
        return {p: stored.get((names["orders"], p)) for p in ends} == ends

    # a stops itself before its third commit: rows staged, nothing written yet.
    zombie = run.start(
        "--instance", "a", "--pause-at", "before_offsets:3", "--work-ms", "2", "--idle", "3"
    )  # fmt: skip
    successor: subprocess.Popen[str] | None = None
    try:
        wait_until(lambda: stopped(zombie.pid), "a pauses", alive=[zombie])
        # b claims every partition once a's session (6 s) expires, and finishes them.
        successor = run.start("--instance", "b", "--idle", "4")
        wait_until(successor_stored_everything, "b stores every offset", alive=[successor])
        os.kill(zombie.pid, signal.SIGCONT)
        wait_until(lambda: zombie.poll() is not None and bool(watch.sample()), "a exits")
        zombie_stats, successor_stats = finish(zombie), finish(successor)
    finally:
        kill(zombie, successor)

    assert zombie_stats["commits"] == 2, zombie_stats
    assert zombie_stats["fenced"] == 1, f"the zombie's commit was not refused: {zombie_stats}"
    assert "FENCED_IN_DATABASE" in zombie_stats["errors"]
    assert successor_stats["processed"] > 0 and successor_stats["fenced"] == 0
    assert successor_stored_everything(), "the stored offsets moved after the zombie woke"
    # Plain INSERTs in the exactly-once sink: a record applied twice would have failed.
    check_database(db, ORDERS, complete=True)


@pytest.mark.parametrize(
    ("guarantee", "eos_sink"),
    [("exactly-once", False), ("exactly-once", True), ("at-least-once", False)],
    ids=["kafka-txn", "db-txn", "idempotent-sink"],
)
def test_cooperative_rebalances_with_three_members_joining_and_leaving(
    broker: BrokerProcess,
    names: dict[str, str],
    postgres_server: PostgresServer,
    guarantee: str,
    eos_sink: bool,
) -> None:
    """cooperative-sticky: each rebalance moves only some partitions, and the callbacks
    add (incremental_assign) or remove them while the others keep their pending work.
    a starts, b joins, c joins, a leaves (SIGTERM: it finishes and leaves the group)."""
    db = postgres_server.new_database()
    run = setup_group(broker, names, guarantee, db, eos_sink)
    # Idle long enough for a member to receive a leaving member's partitions; slow
    # enough work that a late joiner's two-step cooperative rebalance (seconds on a busy
    # machine) still finds records left in the partitions it is given.
    pacing = [
        *PACING, "--work-ms", "30", "--commit-interval-ms", "300", "--cooperative",
        "--idle", "5",
    ]  # fmt: skip
    workers: list[subprocess.Popen[str]] = []
    try:
        for name, charged_before in (("a", 1), ("b", 120), ("c", 240)):
            if workers:
                wait_until(
                    lambda n=charged_before: count_charges(db) >= n,  # type: ignore[misc]
                    f"{charged_before} orders are charged",
                    alive=workers,
                )
            workers.append(run.start("--instance", name, *pacing))
        wait_until(lambda: count_charges(db) >= 360, "360 orders are charged", alive=workers)
        workers[0].send_signal(signal.SIGTERM)
        a, b, c = (finish(worker) for worker in workers)
    finally:
        kill(*workers)

    assert a["revoked"], f"a never gave up a partition: {a}"
    assert a["processed"] and b["processed"] and c["processed"], f"{a} / {b} / {c}"
    assert a["processed"] < len(ORDERS), "a did all the work before the others joined"
    # Plain INSERTs in the exactly-once sink: a record applied twice would have failed.
    check_database(db, ORDERS, complete=True)
    if eos_sink:
        assert all_committed(broker, names, db)
        return
    payments = payment_counts(broker.bootstrap, names["payments"])
    assert set(payments) == ORDER_IDS, "a payment was lost in a cooperative rebalance"
    if guarantee == "exactly-once":
        assert max(payments.values()) == 1, "a payment was duplicated in a rebalance"
    assert all_committed(broker, names)
