"""The order/payment pipeline: charge each order once, keep per-customer balances.

``orders`` holds order events with unique ids and amounts. The processor charges each
order: it emits a payment event to ``payments`` and adds the amount to the customer's
balance in the database. Invariant: every order is charged exactly once, and each
balance equals the sum of that customer's orders.

An order whose ``amount`` is not a positive integer is a poison record: ``charge``
raises, and the runner dead-letters it.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer

from onceflow.guarantees import Guarantee
from onceflow.processing import (
    Database,
    ExactlyOnceSink,
    IdempotentSink,
    Message,
    Output,
    Record,
    Row,
    Runner,
)

ORDERS = "orders"
PAYMENTS = "payments"
LEDGER_TABLE = "charges"
BALANCES_TABLE = "balances"


@dataclass(frozen=True)
class Order:
    """One order event."""

    order_id: str
    customer: str
    amount: Any  # cents; anything but a positive int makes the order a poison record

    def encode(self) -> bytes:
        return json.dumps(
            {"order_id": self.order_id, "customer": self.customer, "amount": self.amount}
        ).encode()


def make_orders(count: int, *, customers: int = 7, seed: int = 5) -> list[Order]:
    """``count`` orders with unique ids, spread over ``customers`` customers."""
    rng = random.Random(seed)
    return [
        Order(f"order-{i:06d}", f"customer-{rng.randrange(customers)}", rng.randint(1, 10_000))
        for i in range(count)
    ]


def produce_orders(bootstrap: str, orders: Iterable[Order], *, topic: str = ORDERS) -> int:
    """Write ``orders`` with an idempotent producer keyed by customer; return the count."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    sent = 0
    for order in orders:
        producer.produce(topic, key=order.customer.encode(), value=order.encode())
        producer.poll(0)
        sent += 1
    if producer.flush(30) != 0:
        raise RuntimeError("orders were not all acknowledged within 30 s")
    return sent


def parse_order(record: Record) -> dict[str, Any]:
    """Decode and validate one order event; raise ``ValueError`` for a poison record."""
    order = json.loads(record.value or b"")
    amount = order.get("amount")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise ValueError(f"order {order.get('order_id')!r} has a bad amount {amount!r}")
    return order


def charge_to_kafka(record: Record, payments_topic: str = PAYMENTS) -> list[Output]:
    """Charge an order: a payment event on ``payments_topic`` and a ledger row."""
    order = parse_order(record)
    payment = {
        "order_id": order["order_id"],
        "customer": order["customer"],
        "amount": order["amount"],
    }
    return [
        Message(payments_topic, json.dumps(payment), key=order["customer"]),
        Row(payment, key=order["order_id"]),
    ]


def charge_to_database(record: Record) -> list[Output]:
    """Charge an order with the payment recorded only in the database."""
    order = parse_order(record)
    payment = {
        "order_id": order["order_id"],
        "customer": order["customer"],
        "amount": order["amount"],
    }
    return [Row(payment, key=order["order_id"])]


def create_balances(db: Database) -> None:
    """Create the balances table if needed."""
    db.begin()
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {BALANCES_TABLE} "
        "(customer TEXT PRIMARY KEY, balance BIGINT NOT NULL)"
    )
    db.commit()


def apply_charge(db: Database, row: Row, record: Record) -> None:
    """Add a newly recorded charge to its customer's balance (same DB transaction)."""
    db.execute(
        f"INSERT INTO {BALANCES_TABLE} (customer, balance) VALUES (?, ?) "
        "ON CONFLICT (customer) DO UPDATE SET balance = balances.balance + excluded.balance",
        (row.value["customer"], row.value["amount"]),
    )


def build_runner(
    bootstrap: str,
    guarantee: Guarantee,
    db: Database,
    *,
    exactly_once_sink: bool = False,
    group: str = "charger",
    payments_topic: str = PAYMENTS,
    **runner_options: Any,
) -> Runner:
    """The charging processor with ``guarantee``.

    With ``exactly_once_sink`` (exactly-once only), payments are recorded in the
    database together with the consumer positions instead of on ``payments``.
    """
    create_balances(db)
    if exactly_once_sink:
        sink: IdempotentSink | ExactlyOnceSink = ExactlyOnceSink(
            db, table=LEDGER_TABLE, apply=apply_charge
        )
        process: Callable[[Record], list[Output]] = charge_to_database
    else:
        sink = IdempotentSink(db, table=LEDGER_TABLE, apply=apply_charge)
        process = functools.partial(charge_to_kafka, payments_topic=payments_topic)
    return Runner(
        bootstrap=bootstrap,
        source=runner_options.pop("source", ORDERS),
        group=group,
        process=process,
        guarantee=guarantee,
        sink=sink,
        **runner_options,
    )


def ledger(db: Database) -> dict[str, int]:
    """order id -> amount, for every charge recorded in the database."""
    rows = db.query(f"SELECT key, value FROM {LEDGER_TABLE}")
    return {key: json.loads(value)["amount"] for key, value in rows}


def balances(db: Database) -> dict[str, int]:
    """customer -> balance."""
    return {c: int(b) for c, b in db.query(f"SELECT customer, balance FROM {BALANCES_TABLE}")}
