"""The demo behind ``make demo``: the order/payment pipeline under each guarantee.

It starts an embedded broker on a background thread with a temporary data dir, sends
the orders once, then runs the charging pipeline (``onceflow.examples.orders``) once
per guarantee, each with its own consumer group, payments topic and SQLite database,
and prints one table: orders sent, payments emitted, distinct payments, and whether
every customer's balance equals the sum of their orders.

Without injected faults all three guarantees come out correct; the rows differ only
in how each one commits (and so in what a crash would do to it).
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from onceflow.broker.config import BrokerConfig
from onceflow.broker.server import run_in_thread
from onceflow.examples.orders import (
    ORDERS,
    Order,
    balances,
    build_runner,
    make_orders,
    payment_counts,
    produce_orders,
)
from onceflow.guarantees import Guarantee
from onceflow.kafka_admin import create_topics
from onceflow.processing import SqliteDatabase

PARTITIONS = 3
#: A run ends once its runner has seen no new order for this long.
IDLE_SECONDS = 1.0
#: A run that takes longer than this is cut short (and shows up as incorrect).
RUN_LIMIT_SECONDS = 120.0


@dataclass(frozen=True)
class PipelineRow:
    """What one run of the pipeline did."""

    guarantee: Guarantee
    orders_sent: int
    payments_emitted: int
    distinct_payments: int
    balances_correct: bool
    seconds: float

    @property
    def exactly_once(self) -> bool:
        """Every order paid once on Kafka and charged once in the database."""
        return (
            self.payments_emitted == self.distinct_payments == self.orders_sent
            and self.balances_correct
        )


def expected_balances(orders: Sequence[Order]) -> dict[str, int]:
    """customer -> the sum of their orders."""
    totals: Counter[str] = Counter()
    for order in orders:
        totals[order.customer] += order.amount
    return dict(totals)


def run_pipeline(
    bootstrap: str, guarantee: Guarantee, orders: Sequence[Order], work_dir: Path
) -> PipelineRow:
    """Charge ``orders`` (already on the ``orders`` topic) under ``guarantee``."""
    name = guarantee.value
    payments_topic = f"payments-{name}"
    db = SqliteDatabase(work_dir / f"{name}.db")
    try:
        runner = build_runner(
            bootstrap, guarantee, db, group=f"charger-{name}", payments_topic=payments_topic
        )
        started = time.monotonic()
        runner.run(idle_timeout=IDLE_SECONDS, max_seconds=RUN_LIMIT_SECONDS)
        # The idle wait at the end is not work.
        seconds = max(time.monotonic() - started - IDLE_SECONDS, 0.0)
        correct = balances(db) == expected_balances(orders)
    finally:
        db.close()
    payments = payment_counts(bootstrap, payments_topic)
    return PipelineRow(
        guarantee, len(orders), sum(payments.values()), len(payments), correct, seconds
    )


def render(rows: Sequence[PipelineRow], console: Console) -> None:
    """Print one row per guarantee."""
    table = Table(title="order/payment pipeline on the embedded broker")
    table.add_column("guarantee", no_wrap=True)
    for column in ("orders sent", "payments emitted", "distinct payments"):
        table.add_column(column, justify="right")
    table.add_column("balances correct", justify="center")
    table.add_column("seconds", justify="right")
    for row in rows:
        emitted_style = "" if row.payments_emitted == row.orders_sent else "[yellow]"
        table.add_row(
            row.guarantee.value,
            str(row.orders_sent),
            f"{emitted_style}{row.payments_emitted}",
            str(row.distinct_payments),
            "[green]yes[/]" if row.balances_correct else "[red]no[/]",
            f"{row.seconds:.1f}",
        )
    console.print(table)


def run_demo(order_count: int, console: Console | None = None) -> int:
    """Run the demo; returns the process exit code (0 when every run is correct)."""
    console = console or Console()
    orders = make_orders(order_count)
    with tempfile.TemporaryDirectory(prefix="onceflow-demo-") as tmp:
        work_dir = Path(tmp)
        config = BrokerConfig(data_dir=work_dir / "broker", port=0)
        with run_in_thread(config) as broker:
            console.print(f"[bold]onceflow broker[/] embedded on {broker.bootstrap}")
            create_topics(
                broker.bootstrap,
                ORDERS,
                *[f"payments-{g.value}" for g in Guarantee],
                partitions=PARTITIONS,
            )
            produce_orders(broker.bootstrap, orders)
            console.print(f"sent {len(orders)} orders to '{ORDERS}' ({PARTITIONS} partitions)")
            rows = []
            for guarantee in Guarantee:
                with console.status(f"charging orders {guarantee.value}..."):
                    rows.append(run_pipeline(broker.bootstrap, guarantee, orders, work_dir))
    render(rows, console)
    all_ok = all(row.exactly_once for row in rows)
    console.print(
        "every order charged exactly once under every guarantee (no faults injected)"
        if all_ok
        else "[red]some orders were lost or charged twice[/]",
        style="bold",
    )
    return 0 if all_ok else 1
