"""Produce and consume throughput of onceflow against librdkafka's mock cluster.

What it measures: with confluent-kafka, N records of 100 bytes (default 1,000,000) are
produced (``acks=all``, ``enable.idempotence=true``, ``linger.ms=5``, records spread
round-robin over the partitions) to a 1-partition and to a 6-partition topic, and then
consumed back, against each target:

* ``onceflow-always``: ``onceflow broker --flush always`` as its own process,
* ``onceflow-never``: the same with ``--flush never``,
* ``kafka``: a single-node Apache Kafka (KRaft, real JVM, 1 GiB heap), as shipped:
  no fsync, durability left to replicas it does not have (needs ``make kafka``),
* ``mock``: librdkafka's built-in in-memory mock cluster, the baseline.

Produce time runs from the first ``produce()`` until ``flush()`` returns with every
record delivered; delivery errors are counted and reported. Before the clock starts,
each producer delivers one record to a warm-up topic, so that connecting and waiting for
the idempotent producer id (librdkafka takes about 0.5 s) are not timed. Consume time runs from
``assign()`` (explicit partitions at OFFSET_BEGINNING, no consumer group, no commits)
until all N records were received; the consumer's ``fetch.queue.backoff.ms`` is 10
instead of librdkafka's 1000, whose pauses would otherwise dominate (see
CONSUMER_CONFIG). Every loop is bounded by a count and a deadline: a
phase that does not finish in time is reported as a timeout with what it managed.

Each phase also reads the broker process's CPU seconds (user + system, /proc) before and
after it: the table's "CPU s/M" is the broker's CPU per million records produced or
consumed, a cost that the client's own ceiling cannot hide (not measurable for the mock,
which runs inside the benchmark's process).

Each target runs ``--repeat`` times (rounds interleave the targets, so background load
hits them alike); every onceflow run gets a fresh data dir in a temporary directory,
removed afterwards. The table shows the median msgs/s and MB/s (payload bytes, 10^6)
and each median's ratio to the mock's.

The mock keeps only the last 5 MB (at most 100,000 batches) of each partition, so for
large runs it cannot hand back everything that was produced: its consumer stops at the
end of what is retained (reported as "short: got X of N") and its consume rate is over
the records it did return. The mock has no CreateTopics and auto-creates 4 partitions,
so the benchmark creates the mock cluster, and its topics with exact partition counts,
through librdkafka's C mock API (the same library confluent-kafka loads).

Run it (``make bench`` runs the first form)::

    .venv/bin/python bench/broker_throughput.py
    .venv/bin/python bench/broker_throughput.py --records 100000 --repeat 1
    .venv/bin/python bench/broker_throughput.py --targets onceflow-never mock --json
    .venv/bin/python bench/broker_throughput.py --targets onceflow-always kafka

The exit status is 1 when any phase had errors, timed out, or a onceflow consumer came
back short.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from rich.console import Console
from rich.table import Table

from targets import SETUP_TIMEOUT, Target, kafka_target, mock_target, onceflow_target

RECORD_BYTES = 100
PARTITION_COUNTS = (1, 6)
PHASES = ("produce", "consume")
BASELINE = "mock"
# The second reference: what users who outgrow one machine run.
KAFKA = "kafka"
CONSUME_BATCH = 10_000
TABLE_WIDTH = 120
CONSUME_POLL_SECONDS = 0.1
WARM_UP_TOPIC = "bench-warm-up"
PRODUCER_CONFIG = {"acks": "all", "enable.idempotence": True, "linger.ms": 5}
CONSUMER_CONFIG = {
    "group.id": "onceflow-bench",  # required by the client; no group is joined
    "enable.auto.commit": False,
    "enable.partition.eof": True,
    # librdkafka >= 2.3 pauses fetching for fetch.queue.backoff.ms (default 1000) whenever
    # its prefetch queue passes queued.min.messages; consume() drains that queue in a
    # fraction of that, so with the default the phase mostly measures the client's sleep.
    "fetch.queue.backoff.ms": 10,
}

TARGETS: dict[str, Callable[[], contextlib.AbstractContextManager[Target]]] = {
    "onceflow-always": lambda: onceflow_target("always"),
    "onceflow-never": lambda: onceflow_target("never"),
    "kafka": kafka_target,
    BASELINE: mock_target,
}

# -- the workload -----------------------------------------------------------------


@dataclasses.dataclass
class Phase:
    """The outcome of producing or consuming one topic once."""

    expected: int
    done: int = 0
    seconds: float = 0.0
    errors: int = 0
    first_error: str | None = None
    timed_out: bool = False
    #: The broker process's CPU seconds during the phase (None: not measurable).
    cpu_seconds: float | None = None

    def error(self, text: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or text

    @property
    def short(self) -> bool:
        return not self.timed_out and self.done < self.expected

    @property
    def msgs_per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_per_million(self) -> float | None:
        """Broker CPU seconds per million records handled in the phase."""
        if self.cpu_seconds is None or not self.done:
            return None
        return self.cpu_seconds * 1e6 / self.done

    @property
    def mb_per_s(self) -> float:
        return self.msgs_per_s * RECORD_BYTES / 1e6

    def notes(self) -> list[str]:
        notes = []
        if self.errors:
            notes.append(f"{self.errors} errors, first: {self.first_error}")
        if self.timed_out:
            notes.append(f"timeout after {self.seconds:.1f}s: {self.done} of {self.expected}")
        elif self.short:
            notes.append(f"short: got {self.done} of {self.expected}")
        return notes


def produce(bootstrap: str, topic: str, partitions: int, records: int, timeout: float) -> Phase:
    """Produce ``records`` round-robin over the partitions; time until all are delivered."""
    result = Phase(records)
    producer = warm_producer(bootstrap, result)
    payload = b"x" * RECORD_BYTES
    deadline = time.monotonic() + timeout
    start = time.perf_counter()
    queued = produce_until(producer, topic, partitions, payload, records, deadline)
    left = producer.flush(max(0.0, deadline - time.monotonic()))
    result.seconds = time.perf_counter() - start
    result.timed_out = queued < records or left > 0
    if left:
        producer.purge()
        producer.flush(0)
    return result


def warm_producer(bootstrap: str, result: Phase) -> Producer:
    """A producer counting its deliveries and errors into ``result``, warmed up."""

    def on_delivery(error: KafkaError | None, _message: Any) -> None:
        if error is None:
            result.done += 1
        else:
            result.error(str(error))

    producer = Producer(
        {"bootstrap.servers": bootstrap, "on_delivery": on_delivery, **PRODUCER_CONFIG}
    )
    warm_up(producer, result)
    return producer


def warm_up(producer: Producer, result: Phase) -> None:
    """Connect and get the idempotent producer id (librdkafka waits ~0.5 s for it)."""
    producer.produce(WARM_UP_TOPIC, b"warm-up", partition=0)
    if producer.flush(SETUP_TIMEOUT) or result.errors:
        raise RuntimeError(f"warm-up produce failed: {result.first_error or 'timeout'}")
    result.done = 0


def produce_until(
    producer: Producer, topic: str, partitions: int, payload: bytes, records: int, deadline: float
) -> int:
    """Queue the records, waiting on a full queue; returns how many got queued."""
    for i in range(records):
        while True:
            try:
                producer.produce(topic, payload, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.005)
                if time.monotonic() > deadline:
                    return i
    return records


def consume(bootstrap: str, topic: str, partitions: int, records: int, timeout: float) -> Phase:
    """Read every partition from the beginning until ``records`` arrived (or all ended)."""
    result = Phase(records)
    consumer = Consumer({"bootstrap.servers": bootstrap, **CONSUMER_CONFIG})
    try:
        consumer.list_topics(topic, timeout=SETUP_TIMEOUT)  # connect before the clock starts
        ended: set[int] = set()
        deadline = time.monotonic() + timeout
        start = time.perf_counter()
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        while result.done < records and len(ended) < partitions:
            if time.monotonic() > deadline:
                result.timed_out = True
                break
            wanted = min(CONSUME_BATCH, records - result.done)
            batch = consumer.consume(wanted, timeout=CONSUME_POLL_SECONDS)
            if tally(batch, result, ended):
                result.seconds = time.perf_counter() - start
        if result.timed_out:
            result.seconds = time.perf_counter() - start
    finally:
        consumer.close()
    return result


def tally(batch: list[Any], result: Phase, ended: set[int]) -> bool:
    """Count a consumed batch's records, errors and partition ends; True if it had data."""
    received = 0
    for message in batch:
        error = message.error()
        if error is None:
            received += 1
        elif error.code() == KafkaError._PARTITION_EOF:
            ended.add(message.partition())
        else:
            result.error(str(error))
    result.done += received
    return received > 0


def run_workload(target: Target, topic: str, partitions: int, records: int, timeout: float) -> dict:
    """Produce then consume one topic; the same for every target. Each phase also
    reports the broker process's CPU seconds it took (None for the in-process mock)."""
    phases = {}
    for name, phase in (("produce", produce), ("consume", consume)):
        before = target.cpu_seconds()
        result = phase(target.bootstrap, topic, partitions, records, timeout)
        after = target.cpu_seconds()
        result.cpu_seconds = None if before is None or after is None else after - before
        phases[name] = result
    return phases


# -- running and reporting ----------------------------------------------------------


@dataclasses.dataclass
class Run:
    target: str
    round: int
    partitions: int
    phase: str
    result: Phase
    loadavg: float


def run_target(name: str, round_: int, records: int, timeout: float, log: Console) -> list[Run]:
    runs = []
    with TARGETS[name]() as cluster:
        cluster.create_topic(WARM_UP_TOPIC, 1)
        for partitions in PARTITION_COUNTS:
            topic = f"bench-{partitions}p"
            cluster.create_topic(topic, partitions)
            phases = run_workload(cluster, topic, partitions, records, timeout)
            load = os.getloadavg()[0]
            for phase, result in phases.items():
                runs.append(Run(name, round_, partitions, phase, result, load))
                log.print(
                    f"{round_} {name:<15} {partitions}p {phase:<7} "
                    f"{result.msgs_per_s:>9,.0f} msgs/s, CPU {_figure(result.cpu_per_million)}"
                    f" s/M, load {load:.2f} {'; '.join(result.notes())}"
                )
    return runs


def summarize(runs: list[Run], targets: list[str]) -> list[dict]:
    """Median msgs/s and MB/s per (target, partitions, phase), with the ratio to the mock."""
    medians: dict[tuple[str, int, str], float] = {}
    rows = []
    for target in targets:
        for partitions in PARTITION_COUNTS:
            for phase in PHASES:
                chosen = [
                    r
                    for r in runs
                    if (r.target, r.partitions, r.phase) == (target, partitions, phase)
                ]
                median = statistics.median(r.result.msgs_per_s for r in chosen)
                medians[target, partitions, phase] = median
                cpu = [c for r in chosen if (c := r.result.cpu_per_million) is not None]
                notes = [note for r in chosen for note in r.result.notes()]
                rows.append(
                    {
                        "target": target,
                        "partitions": partitions,
                        "phase": phase,
                        "msgs_per_s": median,
                        "mb_per_s": median * RECORD_BYTES / 1e6,
                        "broker_cpu_s_per_m": statistics.median(cpu) if cpu else None,
                        "runs": len(chosen),
                        "notes": notes,
                    }
                )
    short = {(r.partitions, r.phase) for r in runs if r.target == BASELINE and r.result.short}
    for row in rows:
        baseline = medians.get((BASELINE, row["partitions"], row["phase"]))
        row["ratio"] = row["msgs_per_s"] / baseline if baseline else None
        kafka = medians.get((KAFKA, row["partitions"], row["phase"]))
        row["ratio_kafka"] = row["msgs_per_s"] / kafka if kafka else None
        row["baseline_short"] = (row["partitions"], row["phase"]) in short
    return rows


def render(rows: list[dict], args: argparse.Namespace, load: tuple[float, float]) -> Table:
    """The summary table; each row's notes (errors, timeouts, short reads) go in its caption."""
    table = Table(
        title=f"{args.records:,} records x {RECORD_BYTES} B, median of {args.repeat} "
        "(acks=all, idempotent, linger.ms=5)",
    )
    table.add_column("target")
    table.add_column("parts", justify="right")
    for phase in PHASES:
        table.add_column(f"{phase} msgs/s", justify="right")
        table.add_column("x mock", justify="right")
        table.add_column("x kafka", justify="right")
        table.add_column("CPU s/M", justify="right")
    by_key = {(r["target"], r["partitions"], r["phase"]): r for r in rows}
    notes = []
    for target, partitions in dict.fromkeys((r["target"], r["partitions"]) for r in rows):
        cells = [target, str(partitions)]
        for phase in PHASES:
            row = by_key[target, partitions, phase]
            ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
            ratio += "*" if row["baseline_short"] and target != BASELINE else ""
            kafka = "-" if row["ratio_kafka"] is None else f"{row['ratio_kafka']:.2f}"
            cpu = _figure(row["broker_cpu_s_per_m"])
            cells += [f"{row['msgs_per_s']:,.0f}", ratio, kafka, cpu]
            notes += [f"{target} {partitions}p {phase}: {note}" for note in row["notes"]]
        table.add_row(*cells)
    if any(row["baseline_short"] for row in rows):
        notes.append(
            "* against a short mock run: the mock keeps only ~5 MB per partition, so its "
            "consumer read fewer records"
        )
    notes.append("CPU s/M: the broker process's CPU seconds (user + system) per million records")
    notes.append(
        f"{os.cpu_count()} CPUs; 1-min load average {load[0]:.2f} before, {load[1]:.2f} after"
    )
    table.caption = "\n".join(notes)
    table.caption_justify = "left"
    return table


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def failed(runs: list[Run]) -> bool:
    """Errors or timeouts anywhere, or records missing from onceflow (not the mock)."""
    return any(
        r.result.errors or r.result.timed_out or (r.result.short and r.target != BASELINE)
        for r in runs
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records per topic")
    parser.add_argument("--repeat", type=int, default=3, help="runs per target")
    parser.add_argument(
        "--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS), metavar="TARGET"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="deadline of each produce/consume phase (s)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    if args.records <= 0 or args.repeat <= 0:
        parser.error("--records and --repeat must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = Console(stderr=True)
    load_before = os.getloadavg()[0]
    runs = []
    for round_ in range(1, args.repeat + 1):
        for target in args.targets:
            runs += run_target(target, round_, args.records, args.timeout, log)
    load = (load_before, os.getloadavg()[0])
    rows = summarize(runs, args.targets)
    if args.json:
        report = {
            "records": args.records,
            "record_bytes": RECORD_BYTES,
            "repeat": args.repeat,
            "cpus": os.cpu_count(),
            "loadavg_before_after": load,
            "summary": rows,
            "runs": [
                {**dataclasses.asdict(r), **{"msgs_per_s": r.result.msgs_per_s}} for r in runs
            ],
        }
        print(json.dumps(report, indent=2))
    else:
        console = Console()
        console.width = max(console.width, TABLE_WIDTH)
        console.print(render(rows, args, load))
    return 1 if failed(runs) else 0


if __name__ == "__main__":
    sys.exit(main())
