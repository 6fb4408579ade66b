"""Helpers of the processing tests: topics, running the worker, reading a topic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from onceflow.examples.orders import LEDGER_TABLE, Order, balances, ledger
from onceflow.testing import BrokerProcess, KafkaCluster

from .worker import open_db

WORKER = Path(__file__).with_name("worker.py")

_KAFKA_FIXTURES = {"kafka-1-node": "onceflow_kafka", "kafka-3-nodes": "onceflow_kafka_cluster"}
EVERY_BROKER = [
    "onceflow",
    *(pytest.param(name, marks=pytest.mark.kafka) for name in _KAFKA_FIXTURES),
]


def broker_on_every_target(
    request: pytest.FixtureRequest, broker: BrokerProcess
) -> BrokerProcess | KafkaCluster:
    """Overrides a module's ``broker`` with each of ``EVERY_BROKER``: the embedded broker
    process of conftest.py, then Apache Kafka with 1 and with 3 nodes."""
    if request.param == "onceflow":
        return broker
    return request.getfixturevalue(_KAFKA_FIXTURES[request.param])


DEADLINE = 30.0


@dataclass
class WorkerRun:
    """Arguments of one pipeline worker; ``run`` starts it and waits for it."""

    bootstrap: str
    guarantee: str
    db: str
    source: str
    payments: str
    group: str
    eos_sink: bool = False
    extra: list[str] = field(default_factory=list)

    def command(self, crash_at: str | None = None) -> list[str]:
        command = [
            sys.executable, str(WORKER), "--bootstrap", self.bootstrap,
            "--guarantee", self.guarantee, "--db", self.db, "--source", self.source,
            "--payments", self.payments, "--group", self.group, *self.extra,
        ]  # fmt: skip
        if self.eos_sink:
            command.append("--eos-sink")
        if crash_at:
            command += ["--crash-at", crash_at]
        return command

    def start(self, *extra: str) -> subprocess.Popen[str]:
        """Start the worker in the background (stdout and stderr piped, as text)."""
        return subprocess.Popen(
            [*self.command(), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def run(
        self, crash_at: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(crash_at), capture_output=True, text=True, timeout=timeout, check=False
        )

    def run_clean(self) -> dict[str, Any]:
        done = self.run()
        return worker_stats(done.returncode, done.stdout, done.stderr)


def worker_stats(returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    """The ``RunStats`` a worker printed; fails unless it exited cleanly."""
    assert returncode == 0, f"worker failed ({returncode}):\n{stderr[-3000:]}"
    return json.loads(stdout.strip().splitlines()[-1])


def finish(worker: subprocess.Popen[str], timeout: float = 60.0) -> dict[str, Any]:
    """Wait for a worker started with ``WorkerRun.start`` and return its stats; kill it
    if it does not finish within ``timeout`` s."""
    try:
        out, err = worker.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        worker.kill()
        out, err = worker.communicate()
        raise AssertionError(f"worker did not finish in {timeout:.0f} s:\n{err[-3000:]}") from None
    return worker_stats(worker.returncode, out, err)


def kill(*workers: subprocess.Popen[str] | None) -> None:
    """SIGCONT (in case it is paused), then SIGKILL every worker still running."""
    for worker in workers:
        if worker is not None and worker.poll() is None:
            os.kill(worker.pid, signal.SIGCONT)
            worker.kill()
            worker.communicate()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    """The group's committed offset of each partition of ``topic`` (-1001: none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return [tp.offset for tp in consumer.committed(tps, timeout=10)]
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str, partitions: int) -> list[int]:
    """The high watermark of each partition of ``topic``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ends"})
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        ]
    finally:
        consumer.close()


def count_charges(db_url: str) -> int:
    """Rows in the ledger (0 before the worker created it)."""
    if db_url.startswith("sqlite:") and not Path(db_url.removeprefix("sqlite:")).exists():
        return 0
    db = open_db(db_url)
    try:
        return len(db.query(f"SELECT order_id FROM {LEDGER_TABLE}"))
    except Exception:  # the worker has not created the table yet
        db.rollback()
        return 0
    finally:
        db.close()


def check_database(db_url: str, orders: Sequence[Order], *, complete: bool) -> dict[str, int]:
    """Every charge in the DB is a real order with its amount, applied once to its
    customer's balance; with ``complete``, every order is charged."""
    db = open_db(db_url)
    try:
        charged, got = ledger(db), balances(db)
    finally:
        db.close()
    by_id = {o.order_id: o for o in orders}
    assert all(by_id[k].amount == v for k, v in charged.items()), "unknown or wrong charge"
    if complete:
        assert set(charged) == set(by_id), f"{len(by_id) - len(charged)} orders not charged"
    expected: Counter[str] = Counter()
    for order_id, amount in charged.items():
        expected[by_id[order_id].customer] += amount
    assert got == dict(expected), "balances != sum of charged orders"
    return charged


def wait_until(
    condition: Callable[[], bool],
    what: str,
    *,
    timeout: float = DEADLINE,
    alive: Sequence[subprocess.Popen[Any]] = (),
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` s or if a process in
    ``alive`` exits first."""
    deadline = time.monotonic() + timeout
    while not condition():
        for process in alive:
            if process.poll() is not None:
                _, err = process.communicate()
                raise AssertionError(
                    f"worker exited ({process.returncode}) before {what}:\n{err[-3000:]}"
                )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting until {what}")
        time.sleep(0.1)  # the polling interval of a bounded wait


def stored_offsets(db_url: str) -> dict[tuple[str, int], int]:
    """(topic, partition) -> next offset, as an exactly-once sink stored it (claimed
    partitions without a committed position are left out)."""
    if db_url.startswith("sqlite:") and not Path(db_url.removeprefix("sqlite:")).exists():
        return {}
    db = open_db(db_url)
    try:
        rows = db.query("SELECT topic, part, next_offset FROM onceflow_offsets")
    except Exception:  # the worker has not created the table yet
        db.rollback()
        return {}
    finally:
        db.close()
    return {(topic, part): offset for topic, part, offset in rows if offset >= 0}
