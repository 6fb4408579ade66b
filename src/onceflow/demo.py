"""The demo behind ``make demo``: order and payment events through the embedded broker.

It starts a broker on a background thread, sends orders with an idempotent producer,
turns each order into a payment event, reads the payments back and checks that every
order was charged exactly once and every customer's balance adds up.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from rich.console import Console
from rich.table import Table

from onceflow.broker.config import BrokerConfig
from onceflow.broker.server import run_in_thread

ORDERS = "orders"
PAYMENTS = "payments"
PARTITIONS = 3
CUSTOMERS = 50
DEADLINE_SECONDS = 60.0


@dataclass(frozen=True)
class Order:
    order_id: str
    customer: str
    amount_cents: int


def make_orders(count: int, seed: int = 7) -> list[Order]:
    rng = random.Random(seed)
    return [
        Order(
            f"order-{i:06d}", f"customer-{rng.randrange(CUSTOMERS):03d}", rng.randrange(100, 50_000)
        )
        for i in range(count)
    ]


def _create_topics(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)
            for name in (ORDERS, PAYMENTS)
        ]
    )
    for future in futures.values():
        future.result(timeout=10)


def _producer(bootstrap: str) -> Producer:
    return Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )


def _read_all(bootstrap: str, topic: str, expected: int) -> list[dict]:
    """Every record of ``topic`` from the beginning, stopping at ``expected`` or the deadline."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "onceflow-demo", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    events: list[dict] = []
    deadline = time.monotonic() + DEADLINE_SECONDS
    try:
        while len(events) < expected and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                if message.error():
                    raise KafkaException(message.error())
                events.append(json.loads(message.value()))
    finally:
        consumer.close()
    return events


def _send(producer: Producer, topic: str, events: list[dict], key: str) -> int:
    """Produce ``events`` and wait for every acknowledgement; returns how many failed."""
    failures = 0

    def on_delivery(error: object, _message: object) -> None:
        nonlocal failures
        if error is not None:
            failures += 1

    for event in events:
        producer.produce(topic, key=event[key], value=json.dumps(event), on_delivery=on_delivery)
        producer.poll(0)
    if producer.flush(DEADLINE_SECONDS) != 0:
        raise RuntimeError(f"{topic}: not every record was acknowledged in time")
    return failures


def run_demo(order_count: int, console: Console | None = None) -> int:
    """Run the demo; returns the process exit code (0 when every check holds)."""
    console = console or Console()
    orders = make_orders(order_count)
    with tempfile.TemporaryDirectory(prefix="onceflow-demo-") as data_dir:
        config = BrokerConfig(data_dir=Path(data_dir), port=0)
        with run_in_thread(config) as broker:
            console.print(f"[bold]onceflow broker[/] embedded on {broker.bootstrap}")
            started = time.monotonic()
            _create_topics(broker.bootstrap)
            producer = _producer(broker.bootstrap)
            order_events = [o.__dict__ for o in orders]
            order_failures = _send(producer, ORDERS, order_events, key="customer")
            received = _read_all(broker.bootstrap, ORDERS, len(orders))
            payments = [{"payment_id": f"pay-{o['order_id']}", **o} for o in received]
            payment_failures = _send(producer, PAYMENTS, payments, key="customer")
            charged = _read_all(broker.bootstrap, PAYMENTS, len(payments))
            elapsed = time.monotonic() - started

    expected_balance = Counter()
    for order in orders:
        expected_balance[order.customer] += order.amount_cents
    balance = Counter()
    for payment in charged:
        balance[payment["customer"]] += payment["amount_cents"]
    distinct = len({p["payment_id"] for p in charged})
    checks = {
        "orders sent": (len(orders), order_failures == 0),
        "orders consumed": (len(received), len(received) == len(orders)),
        "payments emitted": (len(payments), payment_failures == 0),
        "payments read back": (len(charged), len(charged) == len(orders)),
        "distinct payments": (distinct, distinct == len(orders)),
        "customers with correct balance": (
            f"{sum(balance[c] == v for c, v in expected_balance.items())}/{len(expected_balance)}",
            balance == expected_balance,
        ),
    }
    table = Table(title=f"order/payment events through the embedded broker ({elapsed:.1f} s)")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_column("ok")
    for name, (value, ok) in checks.items():
        table.add_row(name, str(value), "[green]yes[/]" if ok else "[red]NO[/]")
    console.print(table)
    all_ok = all(ok for _, ok in checks.values())
    console.print(
        "every order charged exactly once" if all_ok else "[red]checks failed[/]",
        style="bold",
    )
    return 0 if all_ok else 1
