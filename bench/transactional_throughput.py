"""Exactly-once consume-transform-produce against the same loop at least once.

What it measures: N input records of 100 bytes (default 1,000,000) are loaded into a
topic of an onceflow broker (its own process, ``--flush always``), then consumed,
transformed (one output per input) and produced to an output topic by a loop in one of
two modes, each timed from its first poll until every input is processed and committed:

* ``at-least-once``: an idempotent producer (acks=all); every N records (1,000 and 100 by
  default, ``--per-commit``) or 100 ms the loop waits for its outputs to be acknowledged
  and then commits the consumer offsets synchronously.
* ``exactly-once``: a transactional producer; every N records or 100 ms the loop sends
  the consumer's offsets into the transaction with its group metadata and commits the
  transaction (the consumer reads read_committed).

Both modes run on each target, on the same input, ``--repeat`` times each, interleaved:
onceflow (``--flush always``) and a single-node Apache Kafka as shipped (no fsync; needs
``make kafka``). The table reports median records/s, the exactly-once/at-least-once
ratio per target, and each row's ratio to Kafka in the same mode. After each run the
output topic is checked: exactly N records (read_committed for exactly-once), so a fast
but wrong loop cannot pass. Each run also reports the broker process's CPU seconds
(user + system, from /proc/PID/stat; for Kafka its JVM) per million records the loop
consumed and produced: a cost that the client's own ceiling cannot hide.

Both targets get the same client settings: librdkafka backs off ``retry.backoff.ms``
(100 ms) when a transaction's first request meets CONCURRENT_TRANSACTIONS, which both
brokers answer while the previous commit's markers are still being written (EndTxn is
answered once the commit decision is durable, before the markers).

Run it::

    .venv/bin/python bench/transactional_throughput.py
    .venv/bin/python bench/transactional_throughput.py --records 100000 --repeat 1 --json
    .venv/bin/python bench/transactional_throughput.py --targets onceflow
    .venv/bin/python bench/transactional_throughput.py --per-commit 100
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from rich.console import Console
from rich.table import Table

from onceflow.kafka_admin import create_topics
from onceflow.testing import BrokerProcess
from onceflow.testing.kafka import temporary_cluster

PER_COMMIT = (1000, 100)
COMMIT_EVERY_SECONDS = 0.1
PAYLOAD = b"x" * 100
MODES = ("at-least-once", "exactly-once")
KAFKA = "kafka"


@dataclass
class Run:
    mode: str
    records: int
    seconds: float
    commits: int
    output_records: int
    per_commit: int = 0
    cpu_seconds: float = 0.0
    target: str = ""

    @property
    def per_second(self) -> float:
        return self.records / self.seconds

    @property
    def cpu_per_million(self) -> float:
        return self.cpu_seconds * 1_000_000 / self.records


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) may hold spaces: count fields after its ")".
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_input(bootstrap: str, topic: str, records: int) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
    )
    for i in range(records):
        while True:
            try:
                producer.produce(topic, key=b"%d" % i, value=PAYLOAD)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) != 0:
        raise RuntimeError("input load was not fully acknowledged")


def _consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "fetch.queue.backoff.ms": 10,
        }
    )


def transform_loop(
    bootstrap: str,
    source: str,
    sink: str,
    records: int,
    mode: str,
    per_commit: int,
    deadline_s: float,
) -> Run:
    """Consume ``records`` inputs from ``source``, produce one output each, commit."""
    group = f"bench-{mode}-{time.monotonic_ns()}"
    consumer = _consumer(bootstrap, group)
    exactly_once = mode == "exactly-once"
    producer_config: dict[str, object] = {
        "bootstrap.servers": bootstrap,
        "linger.ms": 5,
        "enable.idempotence": True,
    }
    if exactly_once:
        producer_config["transactional.id"] = group
    producer = Producer(producer_config)
    failures: list[str] = []

    def on_delivery(error: object, _message: object) -> None:
        if error is not None:
            failures.append(str(error))

    if exactly_once:
        producer.init_transactions(30)
    consumer.subscribe([source])
    commit: Callable[[], None]
    if exactly_once:

        def commit() -> None:
            producer.send_offsets_to_transaction(
                consumer.position(consumer.assignment()), consumer.consumer_group_metadata()
            )
            producer.commit_transaction(30)
            producer.begin_transaction()

        producer.begin_transaction()
    else:

        def commit() -> None:
            if producer.flush(30) != 0:
                raise RuntimeError("outputs not acknowledged before the commit")
            consumer.commit(asynchronous=False)

    done = 0
    commits = 0
    pending = 0
    started = time.monotonic()
    last_commit = started
    try:
        while done < records:
            if time.monotonic() - started > deadline_s:
                raise TimeoutError(f"{mode}: {done}/{records} records in {deadline_s}s")
            # Never more than the commit size: a commit comes every ``per_commit`` records.
            wanted = min(500, per_commit - pending)
            for message in consumer.consume(num_messages=wanted, timeout=0.1):
                if message.error():
                    raise KafkaException(message.error())
                producer.produce(sink, key=message.key(), value=message.value()[::-1],
                                 on_delivery=on_delivery)  # fmt: skip
                done += 1
                pending += 1
            producer.poll(0)
            now = time.monotonic()
            if pending and (
                pending >= per_commit
                or now - last_commit >= COMMIT_EVERY_SECONDS
                or done >= records
            ):
                commit()
                commits += 1
                pending = 0
                last_commit = now
        elapsed = time.monotonic() - started
        if exactly_once:
            producer.abort_transaction(30)  # the empty transaction begun after the last commit
    finally:
        consumer.close()
    if failures:
        raise RuntimeError(f"{mode}: {len(failures)} delivery failures, first: {failures[0]}")
    return Run(mode, records, elapsed, commits, count_records(bootstrap, sink, records), per_commit)


def count_records(bootstrap: str, topic: str, expected: int) -> int:
    """Records a read_committed consumer reads from ``topic`` (stops at ``expected``+ or idle)."""
    consumer = _consumer(bootstrap, f"count-{time.monotonic_ns()}")
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen = 0
    idle_since = time.monotonic()
    deadline = idle_since + 120
    try:
        while time.monotonic() < deadline and time.monotonic() - idle_since < 3:
            batch = consumer.consume(num_messages=10_000, timeout=0.2)
            if batch:
                idle_since = time.monotonic()
                seen += sum(1 for m in batch if not m.error())
    finally:
        consumer.close()
    return seen


@contextlib.contextmanager
def onceflow_target() -> Iterator[tuple[str, int]]:
    """``onceflow broker --flush always`` as its own process on a fresh data dir:
    (bootstrap, broker pid)."""
    with (
        tempfile.TemporaryDirectory(prefix="onceflow-bench-") as tmp,
        BrokerProcess(Path(tmp) / "data", flush="always") as broker,
    ):
        yield broker.bootstrap, broker.pid


@contextlib.contextmanager
def kafka_target() -> Iterator[tuple[str, int]]:
    """A single-node Apache Kafka as shipped (1 GiB heap, no fsync): (bootstrap, JVM pid)."""
    with temporary_cluster(1, heap_mb=1024) as kafka:
        yield kafka.bootstrap, kafka.nodes[0].pid


TARGETS: dict[str, Callable[[], contextlib.AbstractContextManager[tuple[str, int]]]] = {
    "onceflow": onceflow_target,
    KAFKA: kafka_target,
}


def run_target(target: str, args: argparse.Namespace, console: Console) -> list[Run]:
    """Load the input once, then run each mode at each commit size ``--repeat`` times,
    interleaved."""
    runs = []
    with TARGETS[target]() as (bootstrap, pid):
        create_topics(bootstrap, "input")
        console.print(f"{target}: loading {args.records:,} input records into {bootstrap}")
        load_input(bootstrap, "input", args.records)
        for round_ in range(args.repeat):
            for per_commit in args.per_commit:
                for mode in MODES:
                    sink = f"output-{mode}-{per_commit}-{round_}"
                    create_topics(bootstrap, sink)
                    cpu_before = cpu_seconds(pid)
                    run = transform_loop(
                        bootstrap, "input", sink, args.records, mode, per_commit, args.timeout
                    )
                    # Counting the output (a read) is outside the loop's timing; its CPU
                    # is small next to the loop's and is included.
                    run.cpu_seconds = cpu_seconds(pid) - cpu_before
                    run.target = target
                    console.print(
                        f"{target} round {round_ + 1} {mode} every {per_commit}: "
                        f"{run.per_second:,.0f} records/s, {run.commits} commits, "
                        f"{run.output_records:,} outputs, "
                        f"broker {run.cpu_per_million:.1f} CPU s/M records"
                    )
                    runs.append(run)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--per-commit",
        type=int,
        nargs="+",
        default=list(PER_COMMIT),
        metavar="N",
        help="records per commit (transaction), each size run in turn",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per loop run")
    parser.add_argument(
        "--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS), metavar="TARGET"
    )
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    console = Console(stderr=args.json)
    runs: list[Run] = []
    for target in args.targets:
        runs += run_target(target, args, console)
    wrong = [r for r in runs if r.output_records != r.records]
    keys = [(t, n, m) for t in args.targets for n in args.per_commit for m in MODES]

    def median(key: tuple[str, int, str], value: Callable[[Run], float]) -> float:
        return statistics.median(value(r) for r in runs if (r.target, r.per_commit, r.mode) == key)

    speed = {key: median(key, lambda r: r.per_second) for key in keys}

    def ratio(key: tuple[str, int, str], reference: tuple[str, int, str]) -> float | None:
        return speed[key] / speed[reference] if reference in speed else None

    rows = [
        {
            "target": target,
            "per_commit": per_commit,
            "mode": mode,
            "records_per_s": speed[target, per_commit, mode],
            "x_at_least_once": ratio(
                (target, per_commit, mode), (target, per_commit, "at-least-once")
            ),
            "x_kafka": ratio((target, per_commit, mode), (KAFKA, per_commit, mode)),
            "broker_cpu_s_per_m_records": median(
                (target, per_commit, mode), lambda r: r.cpu_per_million
            ),
        }
        for target, per_commit, mode in keys
    ]
    if args.json:
        print(
            json.dumps(
                {
                    "records": args.records,
                    "repeat": args.repeat,
                    "summary": rows,
                    "runs": [r.__dict__ for r in runs],
                },
                indent=2,
            )
        )
    else:
        table = Table(
            title=f"consume-transform-produce, {args.records:,} records, median of {args.repeat}"
        )
        for column in ("target", "per txn", "mode", "rec/s", "x alo", "x kafka", "CPU s/M"):
            table.add_column(column, justify="left" if column in ("target", "mode") else "right")
        for row in rows:
            table.add_row(
                row["target"],
                f"{row['per_commit']:,}",
                row["mode"],
                f"{row['records_per_s']:,.0f}",
                *(
                    "-" if row[k] is None else f"{row[k]:.2f}"
                    for k in ("x_at_least_once", "x_kafka")
                ),
                f"{row['broker_cpu_s_per_m_records']:.1f}",
            )
        console.print(table)
    for run in wrong:
        console.print(
            f"[red]{run.target} {run.mode} every {run.per_commit}: {run.output_records} "
            f"outputs for {run.records} inputs[/]"
        )
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
