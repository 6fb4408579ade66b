"""The order pipeline into a real PostgreSQL server, with the worker SIGKILLed."""

from __future__ import annotations

import signal

import pytest
from confluent_kafka.admin import NewTopic

from onceflow.examples.orders import make_orders, payment_counts, produce_orders
from onceflow.kafka_admin import create_topics
from onceflow.testing import BrokerProcess
from onceflow.testing.postgres import PostgresServer

from .support import EVERY_BROKER, WorkerRun, broker_on_every_target, check_database

ORDERS = 200

# Every crash test runs unchanged on our broker and on Apache Kafka (1 and 3 nodes).
broker = pytest.fixture(params=EVERY_BROKER)(broker_on_every_target)


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
    create_topics(broker.bootstrap, NewTopic(names["orders"], 2), NewTopic(names["payments"], 1))
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

    charged = check_database(dsn, orders, complete=True)
    if not eos_sink:
        # at-least-once: the redone batch was paid again on Kafka, but the sink
        # applied it once.
        payments = payment_counts(broker.bootstrap, names["payments"])
        assert set(payments) == set(charged) and max(payments.values()) == 2
