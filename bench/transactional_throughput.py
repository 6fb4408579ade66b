"""Exactly-once consume-transform-produce against the same loop at least once.

What it measures: N input records of 100 bytes (default 1,000,000) are loaded into a
topic of an onceflow broker (its own process, ``--flush always``), then consumed,
transformed (one output per input) and produced to an output topic by a loop in one of
two modes, each timed from its first poll until every input is processed and committed:

* ``at-least-once``: an idempotent producer (acks=all); every 1,000 records or 100 ms the
  loop waits for its outputs to be acknowledged and then commits the consumer offsets
  synchronously.
* ``exactly-once``: a transactional producer; every 1,000 records or 100 ms the loop
  sends the consumer's offsets into the transaction with its group metadata and commits
  the transaction (the consumer reads read_committed).

Both modes run in the same process run, on the same input, ``--repeat`` times each,
interleaved; the table reports median records/s and the exactly-once/at-least-once
ratio. After each run the output topic is checked: exactly N records (read_committed
for exactly-once), so a fast but wrong loop cannot pass.

Run it::

    .venv/bin/python bench/transactional_throughput.py
    .venv/bin/python bench/transactional_throughput.py --records 100000 --repeat 1 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from rich.console import Console
from rich.table import Table

from onceflow.kafka_admin import create_topics
from onceflow.testing import BrokerProcess

COMMIT_EVERY_RECORDS = 1000
COMMIT_EVERY_SECONDS = 0.1
PAYLOAD = b"x" * 100
MODES = ("at-least-once", "exactly-once")


@dataclass
class Run:
    mode: str
    records: int
    seconds: float
    commits: int
    output_records: int

    @property
    def per_second(self) -> float:
        return self.records / self.seconds


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
    bootstrap: str, source: str, sink: str, records: int, mode: str, deadline_s: float
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
            for message in consumer.consume(num_messages=500, timeout=0.1):
                if message.error():
                    raise KafkaException(message.error())
                producer.produce(sink, key=message.key(), value=message.value()[::-1],
                                 on_delivery=on_delivery)  # fmt: skip
                done += 1
                pending += 1
            producer.poll(0)
            now = time.monotonic()
            if pending and (
                pending >= COMMIT_EVERY_RECORDS
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
    return Run(mode, records, elapsed, commits, count_records(bootstrap, sink, records))


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per loop run")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    console = Console(stderr=args.json)
    runs: list[Run] = []
    with (
        tempfile.TemporaryDirectory(prefix="onceflow-bench-") as tmp,
        BrokerProcess(Path(tmp) / "data", flush="always") as broker,
    ):
        create_topics(broker.bootstrap, "input")
        console.print(f"loading {args.records:,} input records into {broker.bootstrap}")
        load_input(broker.bootstrap, "input", args.records)
        for round_ in range(args.repeat):
            for mode in MODES:
                sink = f"output-{mode}-{round_}"
                create_topics(broker.bootstrap, sink)
                run = transform_loop(
                    broker.bootstrap, "input", sink, args.records, mode, args.timeout
                )
                console.print(
                    f"round {round_ + 1} {mode}: {run.per_second:,.0f} records/s, "
                    f"{run.commits} commits, {run.output_records:,} outputs"
                )
                runs.append(run)
    wrong = [r for r in runs if r.output_records != r.records]
    medians = {
        mode: statistics.median(r.per_second for r in runs if r.mode == mode) for mode in MODES
    }
    ratio = medians["exactly-once"] / medians["at-least-once"]
    if args.json:
        print(
            json.dumps(
                {
                    "records": args.records,
                    "repeat": args.repeat,
                    "median_records_per_s": medians,
                    "ratio_exactly_once_to_at_least_once": ratio,
                    "runs": [r.__dict__ for r in runs],
                },
                indent=2,
            )
        )
    else:
        table = Table(
            title=f"consume-transform-produce, {args.records:,} records, median of {args.repeat}"
        )
        table.add_column("mode")
        table.add_column("records/s", justify="right")
        table.add_column("x at-least-once", justify="right")
        for mode in MODES:
            table.add_row(
                mode, f"{medians[mode]:,.0f}", f"{medians[mode] / medians['at-least-once']:.2f}"
            )
        console.print(table)
    for run in wrong:
        console.print(f"[red]{run.mode}: {run.output_records} outputs for {run.records} inputs[/]")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
