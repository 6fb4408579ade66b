"""Each guarantee's runner, SIGKILLed at the points that matter, then restarted.

The worker (worker.py) charges orders from ``orders`` into ``payments`` and a SQLite
file (or PostgreSQL). Verdicts: at-most-once may lose but never duplicates;
at-least-once never loses, and its idempotent sink applies each order once;
exactly-once neither loses nor duplicates, in the payments topic (read_committed)
and in the database.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from onceflow.examples.orders import balances, ledger, make_orders, produce_orders
from onceflow.processing import SqliteDatabase
from onceflow.testing import BrokerProcess

from .support import WorkerRun, create_topics, payment_ids

ORDERS = 300


def setup_run(
    broker: BrokerProcess, names: dict[str, str], guarantee: str, db: str, **options: object
) -> tuple[WorkerRun, dict[str, int]]:
    create_topics(broker.bootstrap, (names["orders"], 2), (names["payments"], 1))
    orders = make_orders(ORDERS)
    produce_orders(broker.bootstrap, orders, topic=names["orders"])
    run = WorkerRun(
        broker.bootstrap, guarantee, db, names["orders"], names["payments"], names["group"],
        **options,  # type: ignore[arg-type]
    )  # fmt: skip
    return run, {o.order_id: o.amount for o in orders}


def crash_then_finish(run: WorkerRun, crash_at: str) -> None:
    crashed = run.run(crash_at=crash_at)
    assert crashed.returncode == -signal.SIGKILL, (
        f"worker did not reach {crash_at}: rc={crashed.returncode}\n{crashed.stderr[-3000:]}"
    )
    run.run_clean()


def expected_balances(orders: dict[str, int], customers: dict[str, str]) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for order_id, amount in orders.items():
        totals[customers[order_id]] += amount
    return dict(totals)


def check_database(db_path: Path, orders: dict[str, int], *, complete: bool) -> dict[str, int]:
    """Every charge in the DB is a real order, applied once to its balance."""
    db = SqliteDatabase(db_path)
    try:
        charged, got = ledger(db), balances(db)
    finally:
        db.close()
    assert set(charged) <= set(orders)
    if complete:
        assert set(charged) == set(orders), f"{len(orders) - len(charged)} orders not charged"
    customers = {o.order_id: o.customer for o in make_orders(ORDERS)}
    assert got == expected_balances(charged, customers), "balances != sum of charged orders"
    return charged


def test_at_most_once_loses_but_never_duplicates(
    broker: BrokerProcess, names: dict[str, str], tmp_path: Path
) -> None:
    db = tmp_path / "amo.db"
    run, orders = setup_run(broker, names, "at-most-once", f"sqlite:{db}")
    # Killed after committing a batch's positions but before processing it.
    crash_then_finish(run, "after_commit:2")
    payments = payment_ids(broker.bootstrap, names["payments"])
    assert max(payments.values()) == 1, "at-most-once duplicated a payment"
    assert set(payments) < set(orders), "the committed-but-unprocessed batch should be lost"
    charged = check_database(db, orders, complete=False)
    assert set(charged) < set(orders), "the unprocessed batch should be lost in the DB too"
    # Payments are sent without waiting for acks, so the kill may lose more of them.
    assert set(payments) <= set(charged)


def test_at_least_once_never_loses_and_sink_applies_once(
    broker: BrokerProcess, names: dict[str, str], tmp_path: Path
) -> None:
    db = tmp_path / "alo.db"
    run, orders = setup_run(broker, names, "at-least-once", f"sqlite:{db}")
    # Killed after processing (payments acked, DB committed) but before the offset commit.
    crash_then_finish(run, "before_commit:2")
    payments = payment_ids(broker.bootstrap, names["payments"])
    assert set(payments) == set(orders), "at-least-once lost a payment"
    assert max(payments.values()) == 2, "the redone batch should be paid twice on Kafka"
    check_database(db, orders, complete=True)


@pytest.mark.parametrize(
    "crash_at",
    [
        "record_processed:60",  # mid-transaction: outputs written, transaction open
        "before_commit:2",  # offsets sent to the transaction, commit not yet done
        "after_commit:2",  # committed, next batch not yet processed
    ],
)
def test_exactly_once_kafka_neither_loses_nor_duplicates(
    broker: BrokerProcess, names: dict[str, str], tmp_path: Path, crash_at: str
) -> None:
    db = tmp_path / "eos.db"
    run, orders = setup_run(broker, names, "exactly-once", f"sqlite:{db}")
    crash_then_finish(run, crash_at)
    payments = payment_ids(broker.bootstrap, names["payments"])
    assert set(payments) == set(orders), "exactly-once lost a payment"
    assert max(payments.values()) == 1, "exactly-once duplicated a payment"
    check_database(db, orders, complete=True)


@pytest.mark.parametrize("crash_at", ["record_processed:60", "before_commit:2"])
def test_exactly_once_database_sink(
    broker: BrokerProcess, names: dict[str, str], tmp_path: Path, crash_at: str
) -> None:
    db = tmp_path / "eos-sink.db"
    run, orders = setup_run(broker, names, "exactly-once", f"sqlite:{db}", eos_sink=True)
    crash_then_finish(run, crash_at)
    # Plain INSERTs: a redone record would have failed the worker with an integrity error.
    check_database(db, orders, complete=True)


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return [tp.offset for tp in consumer.committed(tps, timeout=10)]
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ends"})
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        ]
    finally:
        consumer.close()


def count_charges(db: Path) -> int:
    if not db.exists():
        return 0
    reader = SqliteDatabase(db)
    try:
        tables = reader.query("SELECT name FROM sqlite_master WHERE name = 'charges'")
        return len(reader.query("SELECT key FROM charges")) if tables else 0
    finally:
        reader.close()


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_sigterm_finishes_open_work(
    broker: BrokerProcess, names: dict[str, str], tmp_path: Path, guarantee: str
) -> None:
    db = tmp_path / "term.db"
    run, orders = setup_run(broker, names, guarantee, f"sqlite:{db}", extra=["--idle", "60"])
    worker = subprocess.Popen(run.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while count_charges(db) < len(orders) and time.monotonic() < deadline:
            assert worker.poll() is None, worker.communicate()[1].decode()[-3000:]
            time.sleep(0.1)  # the polling interval of a bounded wait
        assert count_charges(db) == len(orders), "worker did not charge every order in time"
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, err.decode()[-3000:]
    # Stopped cleanly: every processed record's position is committed.
    committed = committed_offsets(broker.bootstrap, names["group"], names["orders"], 2)
    assert committed == end_offsets(broker.bootstrap, names["orders"], 2)
    payments = payment_ids(broker.bootstrap, names["payments"])
    assert set(payments) == set(orders) and max(payments.values()) == 1
