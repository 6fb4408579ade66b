"""Throughput of the order/payment pipeline per guarantee and sink, with Quix Streams.

What it measures: N orders (default 200,000; ``--orders``) are produced once to an
``orders`` topic of an ``onceflow broker`` process (``--flush always``, its own process,
via ``onceflow.testing.BrokerProcess``). Then the charging pipeline of
``onceflow.examples.orders`` consumes all of them, once per (guarantee, sink), each run
with its own consumer group and output:

* sink ``kafka``: a payment event per order on a fresh topic (no database);
* sink ``sqlite`` / ``postgresql``: a ledger row per order and the customer's balance
  in a fresh SQLite file (WAL, synchronous=FULL) or PostgreSQL database (a private
  server, fsync on), with no Kafka output: an idempotent sink under at-most-once and
  at-least-once, the exactly-once sink (rows and positions in one DB transaction) under
  exactly-once.

The reference point is Quix Streams with ``processing_guarantee="exactly-once"``: the
equivalent application (parse and validate the order JSON, emit the payment JSON keyed
by customer) on the same broker, in the same run. Quix Streams pins confluent-kafka
below 2.13, so it lives in its own virtualenv (``--quix-python``, default
``.venv-quix/bin/python``, which ``make test`` and ``make bench`` build with
``pip install -e '.[bench]'``) rather than downgrading the project's.

Both use the same commit cadence: every ``--commit-every`` records or
``--commit-interval-ms``, whichever comes first (one transaction per commit under
exactly-once).

Timing: from the first order handed to the processing function until the commit that
covers the last order has returned. onceflow runs in this process and is timed by its
runner's fault hooks (after the final commit; under at-most-once, which commits before
processing, after the last order is processed). Quix Streams runs as a subprocess that
reports when its function first ran; this process then polls the group's committed
offsets every 10 ms until they cover all N orders (so Quix's time can include up to
10 ms of polling lag). Start-up, group join and shutdown are not timed.

Run it::

    .venv/bin/python bench/pipeline_throughput.py
    .venv/bin/python bench/pipeline_throughput.py --orders 20000 --json
    .venv/bin/python bench/pipeline_throughput.py --sinks sqlite postgresql --repeat 3

The exit status is 1 when a run did not process every order in time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

from onceflow.examples.orders import build_runner, make_orders, parse_order, produce_orders
from onceflow.guarantees import Guarantee
from onceflow.kafka_admin import create_topics
from onceflow.processing import (
    Database,
    PostgresDatabase,
    Record,
    SqliteDatabase,
)
from onceflow.processing.crashpoints import AFTER_COMMIT, RECORD_PROCESSED
from onceflow.testing import BrokerProcess
from onceflow.testing.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_QUIX_PYTHON = ROOT / ".venv-quix" / "bin" / "python"
SINKS = ("kafka", "sqlite", "postgresql")
RUN_LIMIT_SECONDS = 600.0
#: Issue 13's target for both PostgreSQL sinks, in the same run as SQLite.
PG_TARGET_RATE = 50_000
PG_TARGET_RATIO = 0.7


@dataclasses.dataclass
class Result:
    """One run of the pipeline."""

    implementation: str
    guarantee: str
    sink: str
    orders: int
    processed: int
    seconds: float | None
    commits: int | None = None

    @property
    def rate(self) -> float | None:
        return self.processed / self.seconds if self.seconds else None


# -- onceflow ------------------------------------------------------------------------


@contextlib.contextmanager
def open_sink_db(sink: str, work: Path, name: str, pg: PostgresServer | None) -> Iterator[Any]:
    if sink == "kafka":
        yield None
        return
    db: Database = (
        SqliteDatabase(work / f"{name}.db")
        if sink == "sqlite"
        else PostgresDatabase(pg.new_database())  # type: ignore[union-attr]
    )
    try:
        yield db
    finally:
        db.close()


def run_onceflow(
    bootstrap: str, guarantee: Guarantee, sink: str, args: argparse.Namespace, work: Path,
    pg: PostgresServer | None, round_: str,
) -> Result:  # fmt: skip
    name = f"onceflow-{guarantee.value}-{sink}-{round_}"
    times: dict[str, float] = {}
    with open_sink_db(sink, work, name.replace("-", "_"), pg) as db:

        def hook(point: str) -> None:
            # At-most-once commits a batch before processing it: it is done when the
            # last order is processed. The others are done when that order's commit is.
            done_point = RECORD_PROCESSED if guarantee is Guarantee.AT_MOST_ONCE else AFTER_COMMIT
            if point == done_point and runner.stats.processed >= args.orders:
                times.setdefault("done", time.perf_counter())
                runner.stop()

        runner = build_runner(
            bootstrap, guarantee, db,
            exactly_once_sink=guarantee is Guarantee.EXACTLY_ONCE and db is not None,
            group=name, payments_topic=name if sink == "kafka" else None,
            commit_every=args.commit_every, commit_interval_ms=args.commit_interval_ms,
            fault_hook=hook,
        )  # fmt: skip
        process = runner.process

        def timed(record: Record) -> Any:
            if "first" not in times:
                times["first"] = time.perf_counter()
            return process(record)

        runner.process = timed
        stats = runner.run(max_seconds=RUN_LIMIT_SECONDS)
    seconds = times["done"] - times["first"] if "done" in times else None
    return Result(
        "onceflow", guarantee.value, sink, args.orders, stats.processed, seconds, stats.commits
    )


# -- Quix Streams ----------------------------------------------------------------------


def quix_worker(args: argparse.Namespace) -> int:
    """The Quix Streams application (runs inside the Quix virtualenv)."""
    from quixstreams import Application

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_every=args.commit_every,
        commit_interval=args.commit_interval_ms / 1000,
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    orders = app.topic("orders", value_deserializer="bytes")
    payments = app.topic(args.output, key_serializer="str", value_serializer="json")
    first: list[float] = []

    def charge(value: bytes) -> dict[str, Any]:
        if not first:
            first.append(time.time())
        # The same parsing and validation as the onceflow pipeline's process function.
        order = parse_order(Record("orders", 0, 0, None, value))
        return {
            "order_id": order["order_id"],
            "customer": order["customer"],
            "amount": order["amount"],
        }

    sdf = app.dataframe(orders).apply(charge)
    sdf.to_topic(payments, key=lambda payment: payment["customer"])
    app.run(count=args.orders, timeout=RUN_LIMIT_SECONDS)
    print(json.dumps({"first": first[0] if first else None}), flush=True)
    return 0


def committed_total(consumer: Consumer, partitions: list[TopicPartition]) -> int:
    return sum(max(tp.offset, 0) for tp in consumer.committed(partitions, timeout=10))


def run_quix(bootstrap: str, args: argparse.Namespace, work: Path, partitions: int) -> Result:
    group, output = "quix-exactly-once", "quix-exactly-once-kafka"
    command = [
        str(args.quix_python), str(Path(__file__).resolve()), "--quix-worker",
        "--bootstrap", bootstrap, "--group", group, "--output", output,
        "--orders", str(args.orders), "--commit-every", str(args.commit_every),
        "--commit-interval-ms", str(args.commit_interval_ms),
        "--state-dir", str(work / "quix-state"),
    ]  # fmt: skip
    watcher = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    tps = [TopicPartition("orders", p) for p in range(partitions)]
    worker = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done: float | None = None
    try:
        deadline = time.monotonic() + RUN_LIMIT_SECONDS
        while time.monotonic() < deadline and worker.poll() is None:
            if committed_total(watcher, tps) >= args.orders:
                done = time.time()
                break
            time.sleep(0.01)  # the observer's polling interval (reported in the docstring)
        out, err = worker.communicate(timeout=120)
    finally:
        watcher.close()
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    if worker.returncode != 0:
        raise RuntimeError(f"Quix Streams failed ({worker.returncode}):\n{err[-5000:]}")
    if done is None and committed_total_after(bootstrap, group, tps) >= args.orders:
        # Committed at shutdown, after the worker exited between two polls.
        done = time.time()
    first = json.loads(out.strip().splitlines()[-1])["first"]
    processed = committed_total_after(bootstrap, group, tps)
    seconds = done - first if done is not None and first is not None else None
    return Result("quix-streams", "exactly-once", "kafka", args.orders, processed, seconds)


def committed_total_after(bootstrap: str, group: str, tps: list[TopicPartition]) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return committed_total(consumer, tps)
    finally:
        consumer.close()


# -- the run -------------------------------------------------------------------------


def find_quix_python(requested: str | None) -> Path:
    if requested:
        return Path(requested)
    if DEFAULT_QUIX_PYTHON.exists():
        return DEFAULT_QUIX_PYTHON
    raise SystemExit(
        f"Quix Streams not found at {DEFAULT_QUIX_PYTHON}: create it with\n"
        "  python -m venv .venv/quix && .venv/quix/bin/pip install -e '.[bench]'\n"
        "or pass --quix-python, or --no-quix"
    )


def run_all(args: argparse.Namespace, console: Console) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="onceflow-pipeline-bench-") as tmp:
        work = Path(tmp)
        broker = BrokerProcess(work / "broker", flush=args.flush).start()
        pg: PostgresServer | None = None
        try:
            if "postgresql" in args.sinks:
                pg = PostgresServer.create().start()
            outputs = [
                f"onceflow-{g.value}-kafka-r{n}" for g in Guarantee for n in range(args.repeat)
            ]
            create_topics(broker.bootstrap, "orders", *outputs, partitions=args.partitions)
            if args.quix_python:
                create_topics(
                    broker.bootstrap, "quix-exactly-once-kafka", partitions=args.partitions
                )
            started = time.perf_counter()
            produce_orders(broker.bootstrap, make_orders(args.orders))
            console.log(
                f"produced {args.orders} orders in {time.perf_counter() - started:.1f} s "
                f"to {broker.bootstrap} ({args.partitions} partitions)"
            )
            runs: dict[tuple[str, str], list[Result]] = {}
            for round_ in range(args.repeat):
                for sink in args.sinks:
                    for guarantee in Guarantee:
                        result = run_onceflow(
                            broker.bootstrap, guarantee, sink, args, work, pg, f"r{round_}"
                        )
                        console.log(describe(result))
                        runs.setdefault((guarantee.value, sink), []).append(result)
            for sink in args.sinks:
                results += [median_run(runs[(g.value, sink)]) for g in Guarantee]
                if sink == "kafka" and args.quix_python:
                    result = run_quix(broker.bootstrap, args, work, args.partitions)
                    console.log(describe(result))
                    results.append(result)
        finally:
            if pg is not None:
                pg.stop()
            broker.stop()
    return results


def median_run(runs: list[Result]) -> Result:
    """The run with the median rate (an unfinished run counts as the slowest)."""
    ranked = sorted(runs, key=lambda r: r.rate or 0.0)
    return ranked[(len(ranked) - 1) // 2]


def describe(result: Result) -> str:
    rate = f"{result.rate:,.0f} records/s" if result.rate else "did not finish"
    return f"{result.implementation} {result.guarantee} -> {result.sink}: {rate}"


def rate_of(results: list[Result], guarantee: str, sink: str) -> float | None:
    for r in results:
        if (r.implementation, r.guarantee, r.sink) == ("onceflow", guarantee, sink):
            return r.rate
    return None


def render(results: list[Result], args: argparse.Namespace, console: Console) -> None:
    table = Table(
        title=f"order/payment pipeline: {args.orders:,} orders, {args.partitions} partitions, "
        f"commit every {args.commit_every} records or {args.commit_interval_ms} ms, "
        f"median of {args.repeat}"
    )
    for column in ("implementation", "guarantee", "sink"):
        table.add_column(column, no_wrap=True)
    for column in ("seconds", "records/s", "x alo", "x sqlite", "commits"):
        table.add_column(column, justify="right")
    for r in results:
        base = rate_of(results, "at-least-once", r.sink)
        sqlite = rate_of(results, r.guarantee, "sqlite") if r.sink == "postgresql" else None
        table.add_row(
            r.implementation, r.guarantee, r.sink,
            f"{r.seconds:.2f}" if r.seconds else "-",
            f"{r.rate:,.0f}" if r.rate else "did not finish",
            f"{r.rate / base:.2f}" if r.rate and base else "-",
            f"{r.rate / sqlite:.2f}" if r.rate and sqlite else "-",
            "-" if r.commits is None else str(r.commits),
        )  # fmt: skip
    console.print(table)
    console.print("x alo: vs at-least-once into the same sink; x sqlite: PostgreSQL vs SQLite.")
    for guarantee, sink_kind in (("at-least-once", "idempotent"), ("exactly-once", "exactly-once")):
        pg = rate_of(results, guarantee, "postgresql")
        sqlite = rate_of(results, guarantee, "sqlite")
        if pg and sqlite:
            met = pg >= PG_TARGET_RATE and pg / sqlite >= PG_TARGET_RATIO
            console.print(
                f"PostgreSQL {sink_kind} sink: {pg:,.0f} records/s, {pg / sqlite:.2f}x SQLite "
                f"(target >= {PG_TARGET_RATE:,} and >= {PG_TARGET_RATIO}x: "
                f"{'[green]met[/]' if met else '[red]missed[/]'})"
            )
    ours = next(
        (r.rate for r in results if (r.implementation, r.guarantee, r.sink)
         == ("onceflow", "exactly-once", "kafka")),
        None,
    )  # fmt: skip
    quix = next((r.rate for r in results if r.implementation == "quix-streams"), None)
    if ours and quix:
        verdict = "[green]met[/]" if ours >= quix else "[red]missed[/]"
        console.print(
            f"onceflow / Quix Streams, exactly-once Kafka to Kafka: {ours / quix:.2f} "
            f"(target >= 1: {verdict})"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--commit-every", type=int, default=10_000)
    parser.add_argument("--commit-interval-ms", type=int, default=1000)
    parser.add_argument("--flush", choices=("always", "never"), default="always")
    parser.add_argument(
        "--repeat", type=int, default=1, help="onceflow runs per guarantee and sink (median)"
    )
    parser.add_argument("--sinks", nargs="+", choices=SINKS, default=list(SINKS))
    parser.add_argument("--quix-python", help="a Python with quixstreams installed")
    parser.add_argument("--no-quix", action="store_true", help="skip the Quix Streams run")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    # The Quix Streams application, run by the benchmark inside the Quix virtualenv.
    parser.add_argument("--quix-worker", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--bootstrap", "--group", "--output", "--state-dir"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quix_worker:
        return quix_worker(args)
    args.quix_python = None if args.no_quix else find_quix_python(args.quix_python)
    console = Console(stderr=args.json)
    if not console.is_terminal:
        # Piped into a file or a log: the table's columns are not cut to 80 characters.
        console.width = 120
    results = run_all(args, console)
    if args.json:
        print(json.dumps([{**dataclasses.asdict(r), "rate": r.rate} for r in results], indent=2))
    else:
        render(results, args, console)
    return 0 if all(r.rate and r.processed >= r.orders for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
