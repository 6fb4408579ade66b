"""Runner behaviour in-process against a broker process: poison records and bad config."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from onceflow import Guarantee
from onceflow.broker.log.disk import FAULTS_ENV
from onceflow.examples.orders import (
    Order,
    balances,
    build_runner,
    ledger,
    make_orders,
    payment_counts,
    produce_orders,
    read_topic,
)
from onceflow.guarantees import GuaranteeConfigError
from onceflow.kafka_admin import create_topics
from onceflow.processing import (
    ExactlyOnceSink,
    ProcessingError,
    Runner,
    RunnerConfigError,
    RunStats,
    SqliteDatabase,
)
from onceflow.processing.crashpoints import AFTER_COMMIT, BEFORE_COMMIT, RECORD_PROCESSED
from onceflow.processing.runner import INIT_SLICE_SECONDS, stable_identity
from onceflow.testing import BrokerProcess

from .support import check_database, wait_until

# A stop asked during init_transactions must end the run within a few of its slices.
STOP_BOUND_SECONDS = 10.0

POISON = {"order-000007": "ten", "order-000033": -5}


def poisoned_orders(count: int) -> list[Order]:
    return [
        Order(o.order_id, o.customer, POISON.get(o.order_id, o.amount)) for o in make_orders(count)
    ]


def make_pipeline(
    broker: BrokerProcess, names: dict[str, str], db_path: Path, guarantee: Guarantee, **kw: object
) -> Runner:
    return build_runner(
        broker.bootstrap, guarantee, SqliteDatabase(db_path), group=names["group"],
        payments_topic=names["payments"], source=names["orders"],
        producer_overrides={"transaction.timeout.ms": 10000}
        if guarantee is Guarantee.EXACTLY_ONCE else {},
        consumer_overrides={"session.timeout.ms": 6000},
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def run_pipeline(
    broker: BrokerProcess, names: dict[str, str], db_path: Path, guarantee: Guarantee, **kw: object
) -> Runner:
    runner = make_pipeline(broker, names, db_path, guarantee, **kw)
    runner.run(idle_timeout=1.5, max_seconds=60)
    return runner


@pytest.mark.parametrize("guarantee", [Guarantee.AT_LEAST_ONCE, Guarantee.EXACTLY_ONCE])
def test_poison_records_go_to_the_dead_letter_topic(
    broker: BrokerProcess, names: dict[str, str], tmp_path: Path, guarantee: Guarantee
) -> None:
    create_topics(broker.bootstrap, NewTopic(names["orders"], 1), NewTopic(names["payments"], 1))
    orders = poisoned_orders(60)
    produce_orders(broker.bootstrap, orders, topic=names["orders"])
    runner = run_pipeline(broker, names, tmp_path / "p.db", guarantee)
    assert runner.stats.dead_lettered == len(POISON)

    dead = read_topic(broker.bootstrap, f"{names['orders']}.dead-letter")
    assert sorted(json.loads(m.value())["order_id"] for m in dead) == sorted(POISON)
    for message in dead:
        headers = dict(message.headers())
        assert b"bad amount" in headers["onceflow.error"]
        assert headers["onceflow.source"].startswith(names["orders"].encode())
    good = {o.order_id for o in orders} - set(POISON)
    payments = payment_counts(broker.bootstrap, names["payments"])
    assert set(payments) == good and max(payments.values()) == 1


def test_poison_record_without_dead_letters_stops_before_it(
    broker: BrokerProcess, names: dict[str, str], tmp_path: Path
) -> None:
    create_topics(broker.bootstrap, NewTopic(names["orders"], 1), NewTopic(names["payments"], 1))
    produce_orders(broker.bootstrap, poisoned_orders(20), topic=names["orders"])
    with pytest.raises(ProcessingError, match="order-000007"):
        run_pipeline(broker, names, tmp_path / "p.db", Guarantee.AT_LEAST_ONCE, dead_letters=False)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": names["group"]})
    try:
        [committed] = consumer.committed([TopicPartition(names["orders"], 0)], timeout=10)
    finally:
        consumer.close()
    # Never past the unprocessed poison record (offset 7).
    assert committed.offset <= 7


def test_poison_record_in_exactly_once_database_sink(
    broker: BrokerProcess, names: dict[str, str], tmp_path: Path
) -> None:
    create_topics(broker.bootstrap, NewTopic(names["orders"], 1), NewTopic(names["payments"], 1))
    orders = poisoned_orders(50)
    produce_orders(broker.bootstrap, orders, topic=names["orders"])
    db_path = tmp_path / "eos.db"
    run_pipeline(broker, names, db_path, Guarantee.EXACTLY_ONCE, exactly_once_sink=True)
    db = SqliteDatabase(db_path)
    try:
        dead = db.query("SELECT src_offset, error FROM onceflow_dead_letters ORDER BY src_offset")
        charged = ledger(db)
        stored = db.query("SELECT next_offset FROM onceflow_offsets")
        got_balances = balances(db)
    finally:
        db.close()
    assert [offset for offset, _ in dead] == [7, 33]
    assert all("bad amount" in error for _, error in dead)
    assert set(charged) == {o.order_id for o in orders} - set(POISON)
    assert stored == [(50,)]
    assert sum(got_balances.values()) == sum(charged.values())


def test_fenced_producer_is_rebuilt_and_the_runner_rejoins(
    broker: BrokerProcess, names: dict[str, str], tmp_path: Path
) -> None:
    create_topics(broker.bootstrap, NewTopic(names["orders"], 2), NewTopic(names["payments"], 1))
    orders = make_orders(300)
    produce_orders(broker.bootstrap, orders, topic=names["orders"])
    members: list[str] = []
    fencers: list[Producer] = []

    def fence_once(point: str) -> None:
        if point == RECORD_PROCESSED and runner.stats.processed == 60 and not fencers:
            assert runner.consumer is not None
            members.append(runner.consumer.memberid())
            # A second producer with the runner's transactional id: the broker bumps the
            # epoch, aborts the open transaction and fences the runner's producer.
            fencer = Producer(
                {"bootstrap.servers": broker.bootstrap, "transactional.id": runner.transactional_id}
            )
            fencer.init_transactions(30)
            fencers.append(fencer)
        elif point == AFTER_COMMIT and runner.stats.rejoins and len(members) == 1:
            assert runner.consumer is not None
            members.append(runner.consumer.memberid())

    db_path = tmp_path / "fenced.db"
    runner = make_pipeline(
        broker, names, db_path, Guarantee.EXACTLY_ONCE, commit_every=40, fault_hook=fence_once
    )
    stats = runner.run(idle_timeout=1.5, max_seconds=60)
    for fencer in fencers:
        fencer.close()

    assert stats.producer_rebuilds == 1 and stats.rejoins == 1, stats
    assert any("FENCED" in name for name in stats.errors), f"fencing not surfaced: {stats}"
    assert len(members) == 2 and members[0] != members[1], f"did not rejoin: {members}"
    payments = payment_counts(broker.bootstrap, names["payments"])
    assert set(payments) == {o.order_id for o in orders}, "a payment was lost"
    assert max(payments.values()) == 1, "the fenced transaction's payments became visible"
    check_database(f"sqlite:{db_path}", orders, complete=True)


def _runner(guarantee: Guarantee, **kw: object) -> Runner:
    return Runner(
        bootstrap="127.0.0.1:1", source="s", group="g", process=lambda r: [],
        guarantee=guarantee, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_bad_configuration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GuaranteeConfigError, match="acks"):
        _runner(Guarantee.EXACTLY_ONCE, producer_overrides={"acks": 0})
    with pytest.raises(GuaranteeConfigError, match=r"enable\.auto\.commit"):
        _runner(Guarantee.AT_LEAST_ONCE, consumer_overrides={"enable.auto.commit": True})
    with pytest.raises(RunnerConfigError, match="EXACTLY_ONCE"):
        _runner(Guarantee.AT_LEAST_ONCE, sink=ExactlyOnceSink(SqliteDatabase(tmp_path / "x.db")))
    with pytest.raises(RunnerConfigError, match="positive"):
        _runner(Guarantee.AT_MOST_ONCE, commit_every=0)


def test_commit_that_times_out_is_retried_never_aborted(
    names: dict[str, str], tmp_path: Path
) -> None:
    """The broker stops (SIGSTOP) just before the second commit, for longer than the
    runner's timeout: commit_transaction times out and its outcome is unknown, so the
    runner retries it (it must not abort) and the commit lands once the broker is back."""
    broker = BrokerProcess(tmp_path / "paused-broker").start()
    try:
        create_topics(
            broker.bootstrap, NewTopic(names["orders"], 1), NewTopic(names["payments"], 1)
        )
        orders = make_orders(120)
        produce_orders(broker.bootstrap, orders, topic=names["orders"])
        commits_reached: list[int] = []

        def pause_broker(point: str) -> None:
            if point == BEFORE_COMMIT:
                commits_reached.append(1)
                if len(commits_reached) == 2:
                    os.kill(broker.pid, signal.SIGSTOP)
                    # The outage: longer than one commit attempt, shorter than them all.
                    threading.Timer(3.0, os.kill, (broker.pid, signal.SIGCONT)).start()

        runner = make_pipeline(
            broker, names, tmp_path / "t.db", Guarantee.EXACTLY_ONCE,
            commit_every=40, fault_hook=pause_broker, timeout=1.5,
        )  # fmt: skip
        # Idle counts from the last record: it must outlast the stalled commit.
        stats = runner.run(idle_timeout=6, max_seconds=60)
        payments = payment_counts(broker.bootstrap, names["payments"])
    finally:
        os.kill(broker.pid, signal.SIGCONT)
        broker.stop()
    assert "_TIMED_OUT" in stats.errors, f"the commit never timed out: {stats}"
    assert stats.aborts == 0 and stats.producer_rebuilds == 0, stats
    assert set(payments) == {o.order_id for o in orders} and max(payments.values()) == 1
    check_database(f"sqlite:{tmp_path / 't.db'}", orders, complete=True)


def _runner_in_a_thread(
    make: Callable[[], Runner],
) -> tuple[threading.Thread, Runner, list[object]]:
    """Build a runner and run it on a thread of its own (its SQLite connection must be
    made there); returns the thread, the runner and, once it ends, its outcome."""
    built: queue.Queue[Runner] = queue.Queue()
    outcome: list[object] = []

    def run() -> None:
        try:
            runner = make()
            built.put(runner)
            outcome.append(runner.run(idle_timeout=2, max_seconds=60))
        except BaseException as exc:  # reported by the test, not lost in the thread
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, built.get(timeout=30), outcome


def _wait_until_asked_for(journal: Path, transactional_id: str) -> None:
    """Until the coordinator has journaled the InitProducerId of ``transactional_id``
    (then, its durability held back, the runner waits inside init_transactions)."""
    wait_until(
        lambda: journal.exists() and transactional_id in journal.read_text(),
        f"the coordinator journals the InitProducerId of {transactional_id}",
    )


def test_init_transactions_outlasts_a_slow_coordinator_and_yields_to_a_stop(
    names: dict[str, str], tmp_path: Path
) -> None:
    """The coordinator cannot answer InitProducerId while its journal's fsync is held (as
    one still loading after a failover keeps answering COORDINATOR_LOAD_IN_PROGRESS).
    The runner waits for it in slices of its timeout: a stop asked meanwhile ends the
    run at once instead of after the whole timeout, and an outage longer than a slice
    but shorter than the timeout costs nothing."""
    gate = tmp_path / "journal-gate"
    faults = {"fsync_block_while": str(gate), "paths": "transactions.journal"}
    data = tmp_path / "data"
    broker = BrokerProcess(data, env={FAULTS_ENV: json.dumps(faults)}).start()
    try:
        create_topics(
            broker.bootstrap, NewTopic(names["orders"], 1), NewTopic(names["payments"], 1)
        )
        orders = make_orders(60)
        produce_orders(broker.bootstrap, orders, topic=names["orders"])

        gate.touch()
        thread, stopped, outcome = _runner_in_a_thread(lambda: make_pipeline(
            broker, {**names, "group": names["group"] + "-stopped"}, tmp_path / "s.db",
            Guarantee.EXACTLY_ONCE, timeout=30,
        ))  # fmt: skip
        _wait_until_asked_for(data / "transactions.journal", str(stopped.transactional_id))
        stopped.stop()
        thread.join(STOP_BOUND_SECONDS)
        assert not thread.is_alive(), "the stop waited for init_transactions' timeout"
        assert isinstance(outcome[0], RunStats), outcome

        thread, patient, outcome = _runner_in_a_thread(
            lambda: make_pipeline(
                broker, names, tmp_path / "p.db", Guarantee.EXACTLY_ONCE, timeout=30
            )
        )
        _wait_until_asked_for(data / "transactions.journal", str(patient.transactional_id))
        # The outage: longer than one slice of init_transactions, shorter than them all.
        threading.Timer(3 * INIT_SLICE_SECONDS, gate.unlink).start()
        thread.join(60)
        assert not thread.is_alive() and isinstance(outcome[0], RunStats), outcome
        payments = payment_counts(broker.bootstrap, names["payments"])
    finally:
        gate.unlink(missing_ok=True)
        broker.stop()
    assert set(payments) == {o.order_id for o in orders} and max(payments.values()) == 1


def test_default_identity_is_stable_and_names_both_ids() -> None:
    first, restarted = (_runner(Guarantee.EXACTLY_ONCE) for _ in range(2))
    host = socket.gethostname()
    assert first.identity == restarted.identity == stable_identity("g", "s", host)
    assert first.consumer_settings["group.instance.id"] == first.identity
    assert first.transactional_id == restarted.transactional_id == f"onceflow-{first.identity}"
    named = _runner(Guarantee.EXACTLY_ONCE, instance="worker 2")
    assert named.identity == "g.s.worker_2" and named.transactional_id == "onceflow-g.s.worker_2"
    dynamic = _runner(Guarantee.AT_LEAST_ONCE, consumer_overrides={"group.instance.id": None})
    assert "group.instance.id" not in dynamic.consumer_settings
    assert dynamic.transactional_id is None
    given = _runner(Guarantee.EXACTLY_ONCE, consumer_overrides={"group.instance.id": "w-7"})
    assert given.consumer_settings["group.instance.id"] == "w-7" and given.instance == "w-7"


def test_long_identity_is_cut_to_what_kafka_accepts_and_stays_unique() -> None:
    a, b = (stable_identity("g" * 200, "s" * 100, name) for name in ("a", "b"))
    assert len(a) == len(b) == 248 and a != b
    assert a == stable_identity("g" * 200, "s" * 100, "a")
