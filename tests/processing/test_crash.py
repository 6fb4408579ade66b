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
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic

from onceflow.examples.orders import make_orders, payment_counts, produce_orders, read_topic
from onceflow.kafka_admin import create_topics
from onceflow.testing import BrokerProcess

from .support import (
    EVERY_BROKER,
    WorkerRun,
    broker_on_every_target,
    check_database,
    committed_offsets,
    count_charges,
    end_offsets,
    finish,
    kill,
    wait_until,
)

ORDERS = 300
ALL_ORDERS = make_orders(ORDERS)

# Every crash test runs unchanged on our broker and on Apache Kafka (1 and 3 nodes).
broker = pytest.fixture(params=EVERY_BROKER)(broker_on_every_target)


def setup_run(
    broker: BrokerProcess, names: dict[str, str], guarantee: str, db: str, **options: object
) -> tuple[WorkerRun, dict[str, int]]:
    create_topics(broker.bootstrap, NewTopic(names["orders"], 2), NewTopic(names["payments"], 1))
    produce_orders(broker.bootstrap, ALL_ORDERS, topic=names["orders"])
    run = WorkerRun(
        broker.bootstrap, guarantee, db, names["orders"], names["payments"], names["group"],
        **options,  # type: ignore[arg-type]
    )  # fmt: skip
    return run, {o.order_id: o.amount for o in ALL_ORDERS}


def crash_then_finish(run: WorkerRun, crash_at: str) -> None:
    crashed = run.run(crash_at=crash_at)
    assert crashed.returncode == -signal.SIGKILL, (
        f"worker did not reach {crash_at}: rc={crashed.returncode}\n{crashed.stderr[-3000:]}"
    )
    run.run_clean()


def test_at_most_once_loses_but_never_duplicates(
    broker: BrokerProcess, names: dict[str, str], tmp_path: Path
) -> None:
    db = f"sqlite:{tmp_path / 'amo.db'}"
    run, orders = setup_run(broker, names, "at-most-once", db)
    # Killed after committing a batch's positions but before processing it.
    crash_then_finish(run, "after_commit:2")
    payments = payment_counts(broker.bootstrap, names["payments"])
    assert max(payments.values()) == 1, "at-most-once duplicated a payment"
    assert set(payments) < set(orders), "the committed-but-unprocessed batch should be lost"
    charged = check_database(db, ALL_ORDERS, complete=False)
    assert set(charged) < set(orders), "the unprocessed batch should be lost in the DB too"
    # Payments are sent without waiting for acks, so the kill may lose more of them.
    assert set(payments) <= set(charged)


def test_at_least_once_never_loses_and_sink_applies_once(
    broker: BrokerProcess, names: dict[str, str], tmp_path: Path
) -> None:
    db = f"sqlite:{tmp_path / 'alo.db'}"
    run, orders = setup_run(broker, names, "at-least-once", db)
    # Killed after processing (payments acked, DB committed) but before the offset commit.
    crash_then_finish(run, "before_commit:2")
    payments = payment_counts(broker.bootstrap, names["payments"])
    assert set(payments) == set(orders), "at-least-once lost a payment"
    assert max(payments.values()) == 2, "the redone batch should be paid twice on Kafka"
    check_database(db, ALL_ORDERS, complete=True)


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
    db = f"sqlite:{tmp_path / 'eos.db'}"
    run, orders = setup_run(broker, names, "exactly-once", db)
    crash_then_finish(run, crash_at)
    payments = payment_counts(broker.bootstrap, names["payments"])
    assert set(payments) == set(orders), "exactly-once lost a payment"
    assert max(payments.values()) == 1, "exactly-once duplicated a payment"
    check_database(db, ALL_ORDERS, complete=True)


@pytest.mark.parametrize("crash_at", ["record_processed:60", "before_commit:2"])
def test_exactly_once_database_sink(
    broker: BrokerProcess, names: dict[str, str], tmp_path: Path, crash_at: str
) -> None:
    db = f"sqlite:{tmp_path / 'eos-sink.db'}"
    run, _ = setup_run(broker, names, "exactly-once", db, eos_sink=True)
    crash_then_finish(run, crash_at)
    # Plain INSERTs: a redone record would have failed the worker with an integrity error.
    check_database(db, ALL_ORDERS, complete=True)


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_sigterm_finishes_open_work(
    broker: BrokerProcess, names: dict[str, str], tmp_path: Path, guarantee: str
) -> None:
    db = f"sqlite:{tmp_path / 'term.db'}"
    run, orders = setup_run(broker, names, guarantee, db, extra=["--idle", "60"])
    worker = run.start()
    try:
        wait_until(
            lambda: count_charges(db) == len(orders), "every order is charged", alive=[worker]
        )
        worker.send_signal(signal.SIGTERM)
        finish(worker, timeout=30)
    finally:
        kill(worker)
    # Stopped cleanly: every processed record's position is committed.
    committed = committed_offsets(broker.bootstrap, names["group"], names["orders"], 2)
    assert committed == end_offsets(broker.bootstrap, names["orders"], 2)
    payments = payment_counts(broker.bootstrap, names["payments"])
    assert set(payments) == set(orders) and max(payments.values()) == 1


def test_restart_with_default_identity_unblocks_read_committed_readers(
    broker: BrokerProcess, names: dict[str, str], tmp_path: Path
) -> None:
    """Default settings (no instance name, no timeouts set): the restarted runner has
    its predecessor's transactional id, so the predecessor's open transaction is
    aborted at once instead of pinning the output's last stable offset for
    transaction.timeout.ms (60 s)."""
    db = f"sqlite:{tmp_path / 'restart.db'}"
    run, orders = setup_run(broker, names, "exactly-once", db, extra=["--defaults"])
    # Slow records: the open transaction's payments reach the broker before the kill.
    crashed = subprocess.run(
        [*run.command("record_processed:150"), "--work-ms", "20"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    visible = len(payment_counts(broker.bootstrap, names["payments"]))
    written = len(read_topic(broker.bootstrap, names["payments"], isolation="read_uncommitted"))
    assert written > visible, "the killed runner left no open transaction on the broker"

    restarted = run.start()
    try:
        wait_until(
            lambda: len(payment_counts(broker.bootstrap, names["payments"])) > visible,
            "a read_committed reader sees new payments",
            timeout=5.0,
            alive=[restarted],
        )
        finish(restarted)
    finally:
        kill(restarted)
    payments = payment_counts(broker.bootstrap, names["payments"])
    assert set(payments) == set(orders) and max(payments.values()) == 1
