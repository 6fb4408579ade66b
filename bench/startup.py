"""Start-up time: seconds from process start to the first acknowledged produce.

For each target, ``--repeat`` times (default 5), interleaved: a fresh data dir, the
server process started, and at the same moment a confluent-kafka producer (acks=all,
reconnecting every 10-50 ms) sends one record to a topic that does not exist yet (both
servers create it on the producer's metadata request). The clock stops when the
record's acknowledgement arrives. Targets:

* ``onceflow``: ``onceflow broker --flush always`` as its own process;
* ``kafka``: a single-node Apache Kafka (KRaft, one JVM, its shipped 1 GiB heap; needs
  ``make kafka``). Its storage is formatted before the clock starts
  (``kafka-storage format`` is a separate, one-time step, reported on its own).

The table reports the median and the range, and each median's ratio to Kafka's.

Run it::

    .venv/bin/python bench/startup.py
    .venv/bin/python bench/startup.py --repeat 3 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import KafkaError, Producer
from rich.console import Console
from rich.table import Table

from onceflow.testing import BrokerProcess
from onceflow.testing.kafka import KafkaCluster, free_port

DEADLINE = 120.0
TOPIC = "startup-probe"


def first_ack(bootstrap: str, started: float) -> float:
    """Seconds from ``started`` until one record sent now is acknowledged."""
    outcome: list[KafkaError | None] = []
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 0,
            "reconnect.backoff.ms": 10,
            "reconnect.backoff.max.ms": 50,
            "retry.backoff.ms": 10,
            "message.timeout.ms": int(DEADLINE * 1000),
            "log_level": 0,
        }
    )
    producer.produce(TOPIC, b"first", on_delivery=lambda err, _m: outcome.append(err))
    deadline = time.monotonic() + DEADLINE
    while not outcome and time.monotonic() < deadline:
        producer.poll(0.005)
    elapsed = time.monotonic() - started
    if not outcome or outcome[0] is not None:
        raise RuntimeError(f"no acknowledgement: {outcome[0] if outcome else 'timeout'}")
    return elapsed


def onceflow_once(root: Path) -> tuple[float, float]:
    port = free_port()
    broker = BrokerProcess(root / "data", port=port)
    started = time.monotonic()
    process = subprocess.Popen(
        broker.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        return 0.0, first_ack(f"127.0.0.1:{port}", started)
    finally:
        process.terminate()
        process.wait(30)


def kafka_once(root: Path) -> tuple[float, float]:
    cluster = KafkaCluster(root, 1, heap_mb=1024)
    formatting = time.monotonic()
    cluster.format()
    formatted = time.monotonic() - formatting
    node = cluster.nodes[0]
    started = time.monotonic()
    node.start()
    try:
        return formatted, first_ack(node.bootstrap, started)
    finally:
        node.stop()


TARGETS: dict[str, Callable[[Path], tuple[float, float]]] = {
    "onceflow": onceflow_once,
    "kafka": kafka_once,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS), metavar="TARGET"
    )
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    console = Console(stderr=args.json)
    seconds: dict[str, list[float]] = {t: [] for t in args.targets}
    formatting: dict[str, list[float]] = {t: [] for t in args.targets}
    for round_ in range(1, args.repeat + 1):
        for target in args.targets:
            with tempfile.TemporaryDirectory(prefix=f"onceflow-startup-{target}-") as root:
                formatted, took = TARGETS[target](Path(root))
            seconds[target].append(took)
            formatting[target].append(formatted)
            console.print(f"round {round_} {target}: first ack after {took:.2f} s")
    medians = {t: statistics.median(v) for t, v in seconds.items()}
    kafka = medians.get("kafka")
    if args.json:
        print(
            json.dumps(
                {
                    "repeat": args.repeat,
                    "seconds": seconds,
                    "median": medians,
                    "format_seconds": formatting,
                    "x_kafka": {t: m / kafka for t, m in medians.items()} if kafka else None,
                },
                indent=2,
            )
        )
        return 0
    table = Table(title=f"process start to first acknowledged produce, median of {args.repeat}")
    for column in ("target", "median s", "min s", "max s", "x kafka", "format s"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for target, values in seconds.items():
        table.add_row(
            target,
            f"{medians[target]:.2f}",
            f"{min(values):.2f}",
            f"{max(values):.2f}",
            f"{medians[target] / kafka:.2f}" if kafka else "-",
            f"{statistics.median(formatting[target]):.2f}" if target == "kafka" else "-",
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
