"""Produce latency while another client rolls segments, against the same load without
rolls.

One ``onceflow broker --flush always`` per case. A roller thread sends 60 KiB records
to one topic as fast as its acknowledgements come back; a probe sends one 10-byte
record at a time to another topic (acks=all, waiting for each acknowledgement) and
times each. The cases differ only in ``--segment-bytes``:

* ``rolling``: 256 KiB segments, a roll every ~4 of the roller's records, each with
  a directory sync and a producer snapshot that must stay off the event loop;
* ``no-roll`` (the baseline): segments larger than anything the run writes.

The table gives the probe's median, 95th percentile and worst latency per case, the
rolls seen, and each figure's ratio to the baseline. (The test suite holds the
mechanism itself deterministically: tests/broker/test_roll_latency.py gates the
roll's syncs and shows the loop still serving.)

Run it::

    .venv/bin/python bench/roll_latency.py
    .venv/bin/python bench/roll_latency.py --probes 1000 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import KafkaError, Producer
from rich.console import Console
from rich.table import Table

from onceflow.testing import BrokerProcess

CASES = {"rolling": 256 * 1024, "no-roll": 1 << 30}
LARGE_VALUE = b"r" * (60 * 1024)
DEADLINE = 60.0


def producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 0,
            "message.timeout.ms": int(DEADLINE * 1000),
            "log_level": 0,
        }
    )


def acknowledged(client: Producer, topic: str, value: bytes) -> None:
    """Send one record and wait (bounded) for its acknowledgement."""
    outcome: list[KafkaError | None] = []
    client.produce(topic, value, on_delivery=lambda err, _m: outcome.append(err))
    deadline = time.monotonic() + DEADLINE
    while not outcome and time.monotonic() < deadline:
        client.poll(0.001)
    if not outcome or outcome[0] is not None:
        raise RuntimeError(f"no acknowledgement: {outcome[0] if outcome else 'timeout'}")


def run_case(root: Path, segment_bytes: int, probes: int) -> tuple[list[float], int]:
    """(probe latencies in seconds, segment rolls) for one broker and segment size."""
    broker = BrokerProcess(root / "data", extra_args=("--segment-bytes", str(segment_bytes)))
    broker.start()
    stop = threading.Event()
    try:
        roller, probe = producer(broker.bootstrap), producer(broker.bootstrap)
        acknowledged(roller, "rolling", b"warm-up")
        acknowledged(probe, "probe", b"warm-up")

        def roll() -> None:
            while not stop.is_set():
                acknowledged(roller, "rolling", LARGE_VALUE)

        thread = threading.Thread(target=roll, daemon=True)
        thread.start()
        latencies = []
        for i in range(probes):
            started = time.perf_counter()
            acknowledged(probe, "probe", b"probe-%d" % i)
            latencies.append(time.perf_counter() - started)
        stop.set()
        thread.join(DEADLINE)
        rolls = len(list((broker.data_dir / "rolling-0").glob("*.log"))) - 1
        return latencies, rolls
    finally:
        stop.set()
        broker.stop()


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "median_ms": statistics.median(latencies) * 1e3,
        "p95_ms": statistics.quantiles(latencies, n=20)[-1] * 1e3,
        "worst_ms": max(latencies) * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=500, help="probe records per case")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    console = Console(stderr=args.json)
    results: dict[str, dict[str, float]] = {}
    for case, segment_bytes in CASES.items():
        with tempfile.TemporaryDirectory(prefix=f"onceflow-roll-{case}-") as root:
            latencies, rolls = run_case(Path(root), segment_bytes, args.probes)
        results[case] = {**summary(latencies), "rolls": rolls}
        console.print(f"{case}: {results[case]['median_ms']:.2f} ms median over {rolls} rolls")
    base = results["no-roll"]
    ratios = {k: results["rolling"][k] / base[k] for k in ("median_ms", "p95_ms", "worst_ms")}
    if args.json:
        print(json.dumps({"probes": args.probes, "cases": results, "x_no_roll": ratios}))
        return 0
    table = Table(title=f"probe produce latency, {args.probes} probes per case")
    for column in ("case", "rolls", "median ms", "p95 ms", "worst ms"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for case, r in results.items():
        table.add_row(
            case, str(int(r["rolls"])), f"{r['median_ms']:.2f}", f"{r['p95_ms']:.2f}",
            f"{r['worst_ms']:.2f}",
        )  # fmt: skip
    table.add_row(
        "x no-roll", "", f"{ratios['median_ms']:.2f}", f"{ratios['p95_ms']:.2f}",
        f"{ratios['worst_ms']:.2f}",
    )  # fmt: skip
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
