"""Several clients at once: 2 producer and 2 consumer processes on 6 partitions.

What it measures: N records of 100 bytes (default 200,000) are produced by
``--clients`` producer processes at once (each N / clients records, round-robin over
the 6 partitions; acks=all, idempotent, linger.ms=5, as in broker_throughput.py), then
read back by as many consumer processes at once, each assigned its share of the
partitions from the beginning (no group, no commits). Every process connects and warms
up first (for producers: one acknowledged record, which also fetches the idempotent
producer id) and reports ready; then all are told to go together. The aggregate rate is
the records all processes handled over the time from the first process's start to the
last one's end (one clock for all: CLOCK_MONOTONIC is system-wide).

Targets, as in the other benchmarks (see bench/targets.py): onceflow with
``--flush always``, a single-node Apache Kafka as shipped (no fsync), and librdkafka's
mock cluster (in this process; it keeps only ~5 MB per partition, which the default N
fits). Each phase also reports the broker process's CPU seconds per million records
(not measurable for the mock).

Run it::

    .venv/bin/python bench/multi_client.py
    .venv/bin/python bench/multi_client.py --records 600000 --targets onceflow kafka --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from rich import box
from rich.console import Console
from rich.table import Table

from broker_throughput import (
    CONSUME_BATCH,
    CONSUME_POLL_SECONDS,
    CONSUMER_CONFIG,
    WARM_UP_TOPIC,
    Phase,
    produce_until,
    tally,
    warm_producer,
)
from targets import SETUP_TIMEOUT, Target, kafka_target, mock_target, onceflow_target

PARTITIONS = 6
TOPIC = "bench-multi"
PHASES = ("produce", "consume")
TARGETS: dict[str, Callable[[], contextlib.AbstractContextManager[Target]]] = {
    "onceflow": lambda: onceflow_target("always"),
    "kafka": kafka_target,
    "mock": mock_target,
}


# -- the worker processes -------------------------------------------------------------


def produce_worker(bootstrap: str, count: int, timeout: float) -> dict[str, Any]:
    result = Phase(count)
    producer = warm_producer(bootstrap, result)
    _ready()
    started = time.monotonic()
    deadline = started + timeout
    produce_until(producer, TOPIC, PARTITIONS, b"x" * 100, count, deadline)
    left = producer.flush(max(0.0, deadline - time.monotonic()))
    return _report(result, started, timed_out=left > 0 or result.done < count)


def consume_worker(
    bootstrap: str, partitions: list[int], count: int, timeout: float
) -> dict[str, Any]:
    result = Phase(count)
    consumer = Consumer({"bootstrap.servers": bootstrap, **CONSUMER_CONFIG})
    try:
        consumer.list_topics(TOPIC, timeout=SETUP_TIMEOUT)  # connected before "go"
        _ready()
        started = time.monotonic()
        deadline = started + timeout
        consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in partitions])
        ended: set[int] = set()
        while result.done < count and len(ended) < len(partitions):
            if time.monotonic() > deadline:
                break
            batch = consumer.consume(min(CONSUME_BATCH, count - result.done),
                                     timeout=CONSUME_POLL_SECONDS)  # fmt: skip
            tally(batch, result, ended)
    finally:
        consumer.close()
    return _report(result, started, timed_out=result.done < count)


def _ready() -> None:
    """Tell the parent this process is set up, and wait (bounded) for its "go"."""
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("the benchmark did not say go")


def _report(result: Phase, started: float, *, timed_out: bool) -> dict[str, Any]:
    return {
        "done": result.done,
        "errors": result.errors,
        "first_error": result.first_error,
        "started": started,
        "ended": time.monotonic(),
        "timed_out": timed_out,
    }


# -- the parent -------------------------------------------------------------------------


def run_phase(target: Target, phase: str, args: argparse.Namespace) -> dict[str, Any]:
    """Start ``--clients`` workers of ``phase``, let them go together, and aggregate."""
    per_client = args.records // args.clients
    shares = [list(range(PARTITIONS))[i :: args.clients] for i in range(args.clients)]
    commands = []
    for i in range(args.clients):
        command = [sys.executable, __file__, "--worker", phase, "--bootstrap", target.bootstrap,
                   "--timeout", str(args.timeout)]  # fmt: skip
        if phase == "produce":
            command += ["--count", str(per_client)]
        else:
            # Each producer spread its records evenly: a partition holds records / 6.
            count = len(shares[i]) * (per_client * args.clients // PARTITIONS)
            command += ["--count", str(count), "--assign", ",".join(map(str, shares[i]))]
        commands.append(command)
    workers = [
        subprocess.Popen(c, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for c in commands
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            if worker.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a {phase} worker did not get ready")
        cpu_before = target.cpu_seconds()
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        reports = [json.loads(w.communicate(timeout=args.timeout + 60)[0]) for w in workers]
        cpu_after = target.cpu_seconds()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    done = sum(r["done"] for r in reports)
    seconds = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return {
        "records": done,
        "seconds": seconds,
        "msgs_per_s": done / seconds if seconds > 0 else 0.0,
        "broker_cpu_s_per_m": cpu * 1e6 / done if cpu is not None and done else None,
        "errors": sum(r["errors"] for r in reports),
        "first_error": next((r["first_error"] for r in reports if r["first_error"]), None),
        "timed_out": any(r["timed_out"] for r in reports),
    }


def run_target(name: str, args: argparse.Namespace, console: Console) -> list[dict[str, Any]]:
    runs = []
    for round_ in range(1, args.repeat + 1):
        with TARGETS[name]() as target:
            target.create_topic(WARM_UP_TOPIC, 1)
            target.create_topic(TOPIC, PARTITIONS)
            for phase in PHASES:
                run = {"target": name, "round": round_, "phase": phase,
                       **run_phase(target, phase, args)}  # fmt: skip
                cpu = run["broker_cpu_s_per_m"]
                console.print(
                    f"{name} round {round_} {phase}: {run['msgs_per_s']:,.0f} msgs/s over "
                    f"{args.clients} clients, broker CPU {'-' if cpu is None else f'{cpu:.1f}'}"
                    f" s/M{'; TIMED OUT' if run['timed_out'] else ''}"
                    f"{'; errors: ' + str(run['first_error']) if run['errors'] else ''}"
                )
                runs.append(run)
    return runs


def summarize(runs: list[dict[str, Any]], targets: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name in targets:
        for phase in PHASES:
            chosen = [r for r in runs if (r["target"], r["phase"]) == (name, phase)]
            cpu = [r["broker_cpu_s_per_m"] for r in chosen if r["broker_cpu_s_per_m"] is not None]
            rows.append({
                "target": name,
                "phase": phase,
                "msgs_per_s": statistics.median(r["msgs_per_s"] for r in chosen),
                "broker_cpu_s_per_m": statistics.median(cpu) if cpu else None,
            })  # fmt: skip
    speed = {(r["target"], r["phase"]): r["msgs_per_s"] for r in rows}
    for row in rows:
        for reference in ("mock", "kafka"):
            base = speed.get((reference, row["phase"]))
            row[f"x_{reference}"] = row["msgs_per_s"] / base if base else None
    return rows


def _figure(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000, help="records in all")
    parser.add_argument("--clients", type=int, default=2, help="producers, then consumers")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per phase")
    parser.add_argument(
        "--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS), metavar="TARGET"
    )
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--worker", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--assign", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "produce":
        print(json.dumps(produce_worker(args.bootstrap, args.count, args.timeout)))
        return 0
    if args.worker == "consume":
        partitions = [int(p) for p in args.assign.split(",")]
        print(json.dumps(consume_worker(args.bootstrap, partitions, args.count, args.timeout)))
        return 0
    if args.records % (args.clients * PARTITIONS):
        parser.error(f"--records must be a multiple of {args.clients * PARTITIONS}")
    console = Console(stderr=args.json)
    runs = [run for name in args.targets for run in run_target(name, args, console)]
    rows = summarize(runs, args.targets)
    if args.json:
        print(json.dumps({"records": args.records, "clients": args.clients,
                          "partitions": PARTITIONS, "summary": rows, "runs": runs}))  # fmt: skip
    else:
        table = Table(
            title=f"{args.clients} producers then {args.clients} consumers, {PARTITIONS} "
            f"partitions, {args.records:,} records, median of {args.repeat}",
            box=box.SIMPLE_HEAD,
        )
        for column in ("target", "phase", "msgs/s", "x mock", "x kafka", "CPU s/M"):
            table.add_column(column, justify="left" if column in ("target", "phase") else "right")
        for row in rows:
            table.add_row(row["target"], row["phase"], f"{row['msgs_per_s']:,.0f}",
                          _figure(row["x_mock"]), _figure(row["x_kafka"]),
                          _figure(row["broker_cpu_s_per_m"], 1))  # fmt: skip
        table.caption = "CPU s/M: the broker process's CPU seconds per million records."
        console.print(table)
    failed = [r for r in runs if r["errors"] or r["timed_out"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
