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
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka import Message as KafkaMessage

from onceflow.client_logging import LIBRDKAFKA_LOGGER, client_config
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
#: The ledger is a table of the application's own: one typed row per charged order.
LEDGER_COLUMNS = {"order_id": "TEXT", "customer": "TEXT", "amount": "BIGINT"}
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
    producer = Producer(client_config({"bootstrap.servers": bootstrap, "enable.idempotence": True}))
    sent = 0
    for order in orders:
        deadline = time.monotonic() + 30
        while True:
            try:
                producer.produce(topic, key=order.customer.encode(), value=order.encode())
                break
            except BufferError:
                # The local queue is full: wait for acknowledgements to make room.
                if time.monotonic() > deadline:
                    raise
                producer.poll(0.05)
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


def charge(
    record: Record, *, payments_topic: str | None = PAYMENTS, database: bool = True
) -> list[Output]:
    """Charge an order: a payment event on ``payments_topic`` (unless None) and, with
    ``database``, a ledger row keyed by the order id."""
    order = parse_order(record)
    payment = {
        "order_id": order["order_id"],
        "customer": order["customer"],
        "amount": order["amount"],
    }
    outputs: list[Output] = []
    if payments_topic is not None:
        outputs.append(Message(payments_topic, json.dumps(payment), key=order["customer"]))
    if database:
        outputs.append(Row(payment))  # a ledger row; its key column is order_id
    return outputs


def create_balances(db: Database) -> None:
    """Create the balances table if needed."""
    db.begin()
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {BALANCES_TABLE} "
        "(customer TEXT PRIMARY KEY, balance BIGINT NOT NULL)"
    )
    db.commit()


def apply_charges(db: Database, charges: list[tuple[Row, Record]]) -> None:
    """Add a commit's newly recorded charges to their customers' balances (same DB
    transaction): one upsert per customer, however many charges the commit holds."""
    totals: Counter[str] = Counter()
    for row, _record in charges:
        totals[row.value["customer"]] += row.value["amount"]
    p = db.placeholder
    db.execute_many(
        f"INSERT INTO {BALANCES_TABLE} (customer, balance) VALUES ({p}, {p}) "
        "ON CONFLICT (customer) DO UPDATE SET balance = balances.balance + excluded.balance",
        list(totals.items()),
    )


def build_runner(
    bootstrap: str,
    guarantee: Guarantee,
    db: Database | None,
    *,
    exactly_once_sink: bool = False,
    group: str = "charger",
    payments_topic: str | None = PAYMENTS,
    runner_class: Callable[..., Runner] = Runner,
    **runner_options: Any,
) -> Runner:
    """The charging processor with ``guarantee``.

    Payments go to ``payments_topic`` (None: nowhere) and, when ``db`` is given, to a
    ledger and the balances in ``db`` through an idempotent sink. With
    ``exactly_once_sink`` (exactly-once only) they are recorded only in ``db``, together
    with the consumer positions. ``runner_class`` builds the runner (the verifier passes
    one that records).
    """
    sink: IdempotentSink | ExactlyOnceSink | None = None
    if db is not None:
        create_balances(db)
        sink_class = ExactlyOnceSink if exactly_once_sink else IdempotentSink
        sink = sink_class(
            db, table=LEDGER_TABLE, key="order_id", columns=LEDGER_COLUMNS,
            apply_many=apply_charges,
        )  # fmt: skip
    elif exactly_once_sink:
        raise ValueError("an exactly-once sink needs a database")
    if exactly_once_sink:
        payments_topic = None
    return runner_class(
        bootstrap=bootstrap,
        source=runner_options.pop("source", ORDERS),
        group=group,
        process=functools.partial(charge, payments_topic=payments_topic, database=sink is not None),
        guarantee=guarantee,
        sink=sink,
        **runner_options,
    )


def ledger(db: Database) -> dict[str, int]:
    """order id -> amount, for every charge recorded in the database."""
    rows = db.query(f"SELECT order_id, amount FROM {LEDGER_TABLE}")
    return {order_id: int(amount) for order_id, amount in rows}


def balances(db: Database) -> dict[str, int]:
    """customer -> balance."""
    return {c: int(b) for c, b in db.query(f"SELECT customer, balance FROM {BALANCES_TABLE}")}


def read_topic(
    bootstrap: str, topic: str, *, isolation: str = "read_committed", timeout: float = 30.0
) -> list[KafkaMessage]:
    """Every record of ``topic`` (all partitions) visible with ``isolation``: read until
    each position reaches the end offset ListOffsets reports for that isolation level
    (the last stable offset under read_committed)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"onceflow-reader-{time.monotonic_ns()}",
            "logger": LIBRDKAFKA_LOGGER,
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics[topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=timeout) for tp in tps}
        # An empty partition is done before the reader ever gets a position on it.
        todo = [tp for tp in tps if ends[tp.partition][1] > ends[tp.partition][0]]
        messages: list[KafkaMessage] = []
        deadline = time.monotonic() + timeout
        consumer.assign(todo)
        while todo:
            positions = {tp.partition: tp.offset for tp in consumer.position(todo)}
            if all(positions[tp.partition] >= ends[tp.partition][1] for tp in todo):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: reader did not reach {ends} within {timeout} s")
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                error = message.error()
                if error is None:
                    messages.append(message)
                elif error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
        return messages
    finally:
        consumer.close()


def payment_counts(bootstrap: str, topic: str = PAYMENTS) -> Counter[str]:
    """order id -> how many payment events ``topic`` holds for it (read_committed)."""
    return Counter(json.loads(m.value())["order_id"] for m in read_topic(bootstrap, topic))
