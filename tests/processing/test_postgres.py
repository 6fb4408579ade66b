"""The order pipeline into a real PostgreSQL server, with the worker SIGKILLed."""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from onceflow.examples.orders import balances, ledger, make_orders, produce_orders
from onceflow.processing import PostgresDatabase
from onceflow.testing import BrokerProcess

from .conftest import PostgresServer
from .support import WorkerRun, create_topics, payment_ids

ORDERS = 200


@pytest.mark.parametrize(
    ("guarantee", "eos_sink", "crash_at"),
    [
        ("at-least-once", False, "before_commit:2"),
        ("exactly-once", True, "before_commit:2"),
        ("exactly-once", True, "record_processed:50"),
    ],
)
def test_postgres_sink_applies_each_order_once(
    broker: BrokerProcess,
    names: dict[str, str],
    postgres_server: PostgresServer,
    guarantee: str,
    eos_sink: bool,
    crash_at: str,
) -> None:
    create_topics(broker.bootstrap, (names["orders"], 2), (names["payments"], 1))
    orders = make_orders(ORDERS)
    produce_orders(broker.bootstrap, orders, topic=names["orders"])
    dsn = postgres_server.new_database()
    run = WorkerRun(
        broker.bootstrap, guarantee, dsn, names["orders"], names["payments"], names["group"],
        eos_sink=eos_sink,
    )  # fmt: skip
    crashed = run.run(crash_at=crash_at)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    run.run_clean()

    db = PostgresDatabase(dsn)
    try:
        charged, got = ledger(db), balances(db)
    finally:
        db.close()
    assert charged == {o.order_id: o.amount for o in orders}
    expected: Counter[str] = Counter()
    for order in orders:
        expected[order.customer] += order.amount
    assert got == dict(expected)
    if not eos_sink:
        # at-least-once: the redone batch was paid again on Kafka, but the sink
        # applied it once.
        payments = payment_ids(broker.bootstrap, names["payments"])
        assert set(payments) == set(charged) and max(payments.values()) == 2
