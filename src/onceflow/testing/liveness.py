"""Liveness under combined faults, shaped like Kafka's transactions system test.

``run_liveness`` starts ``onceflow broker`` as a real process, fills a 3-partition
input topic with numbered records, and runs two transactional copiers
(``onceflow.testing.copier``, each its own OS process, one consumer group) that copy
it to an output topic, aborting about a fifth of their transactions on purpose. Once
a third of the input is committed, one copier is SIGKILLed and started again; once
two thirds are, the broker is SIGKILLed and started again on the same data dir and
port. The run ends when every input partition's offsets are committed to its end (or
at the deadline, or once no copier has received input for three stall limits); then
the copiers are stopped and the output is read read_committed.

The verdict (``LivenessResult``): every input copied exactly once, in order per
partition, and no stall (``onceflow.testing.stalls``: a copier owning uncopied input
but receiving none, or all copiers receiving none while input is left) longer than
the session timeout plus a rebalance (``stall_limit``).

``workdir`` keeps the broker's data dir and log, each copier's log (librdkafka debug
contexts from ``ONCEFLOW_COPIER_DEBUG``, e.g. ``eos,cgrp``, and the stack of a copier
stuck in one call for 20 s) and every copier event in ``events.jsonl``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from onceflow.client_logging import client_config
from onceflow.testing.broker_process import BrokerProcess
from onceflow.testing.child import close_and_wait
from onceflow.testing.stalls import Stall, longest_stall

PARTITIONS = 3
INPUT, OUTPUT, GROUP = "copier-input", "copier-output", "copiers"
COPIERS = ("a", "b")
#: The copier SIGKILLed (and started again) mid-run.
VICTIM = "a"
SESSION_MS = 6000
#: Bounds setup steps: topic creation, filling the input, reading the output.
STEP_TIMEOUT = 60.0


@dataclasses.dataclass
class LivenessResult:
    """One run's numbers and verdict."""

    records: int
    copied: int = 0
    duplicates: int = 0
    lost: int = 0
    out_of_order: int = 0
    stall: Stall = dataclasses.field(default_factory=Stall)
    stall_limit: float = 0.0
    seconds: float = 0.0
    commits: int = 0
    aborts: int = 0
    #: The faults injected, each with when (seconds after the copiers started).
    faults: list[str] = dataclasses.field(default_factory=list)
    #: Copier processes that stopped on their own, and why.
    failures: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.copied == self.records
            and not (self.duplicates or self.lost or self.out_of_order or self.failures)
            and self.stall.seconds <= self.stall_limit
        )

    def problems(self) -> list[str]:
        """What went wrong, one phrase each (empty when ``ok``)."""
        found = [f"copier {failure}" for failure in self.failures]
        for count, what in (
            (self.lost, "not in the output"),
            (self.duplicates, "duplicated"),
            (self.out_of_order, "out of order"),
        ):
            if count:
                found.append(f"{count} of {self.records} inputs {what}")
        if self.stall.seconds > self.stall_limit:
            found.append(
                f"{self.stall.who} received no input for {self.stall.seconds:.1f} s "
                f"from {self.stall.since:.1f} s (limit {self.stall_limit:.0f} s)"
            )
        return found

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ok": self.ok}


class Events:
    """Every copier's reported events, in arrival order, with a condition to wait on."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.changed = threading.Condition()

    def add(self, event: dict[str, Any]) -> None:
        with self.changed:
            self.items.append(event)
            self.changed.notify_all()

    def wait(self, condition: Callable[[list[dict[str, Any]]], bool], deadline: float) -> bool:
        """Wait until ``condition(events)`` holds (True) or ``deadline`` passes (False)."""
        with self.changed:
            while not condition(self.items):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(min(remaining, 1.0))
            return True

    def snapshot(self) -> list[dict[str, Any]]:
        with self.changed:
            return list(self.items)


class CopierProcess:
    """One copier incarnation: its process and a thread feeding its events to ``Events``."""

    def __init__(self, name: str, incarnation: int, bootstrap: str, workdir: Path,
                 events: Events, max_seconds: float) -> None:  # fmt: skip
        self.label = f"{name}{incarnation}"
        command = [
            sys.executable, "-m", "onceflow.testing.copier",
            "--bootstrap", bootstrap, "--input", INPUT, "--output", OUTPUT,
            "--group", GROUP, "--transactional-id", f"copier-{name}",
            "--session-ms", str(SESSION_MS), "--seed", str(incarnation * 10 + ord(name)),
            "--max-seconds", str(max_seconds),
            "--debug", os.environ.get("ONCEFLOW_COPIER_DEBUG", ""),
        ]  # fmt: skip
        with open(workdir / f"copier-{self.label}.log", "ab") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log
            )
        self._events = events
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._events.add({**json.loads(line), "copier": self.label})
        self.process.wait()
        self._events.add(
            {"ev": "exit", "t": time.monotonic(), "copier": self.label,
             "rc": self.process.returncode}
        )  # fmt: skip

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._reader.join(10)

    def stop(self, timeout: float = 15.0) -> None:
        """Close stdin: the copier finishes its transaction and leaves the group."""
        close_and_wait(self.process, timeout)
        self._reader.join(10)


def run_liveness(workdir: Path, records: int = 30_000, deadline: float = 180.0) -> LivenessResult:
    """One run of the scenario in ``workdir`` (broker data, broker and copier logs).

    ``deadline`` bounds the copying in seconds; setup and the final read are bounded
    by ``STEP_TIMEOUT`` each.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    # The session timeout plus a rebalance, which takes at most another session timeout
    # here: a member that does not rejoin is dropped once its session expires.
    result = LivenessResult(records=records, stall_limit=2 * SESSION_MS / 1000)
    # All copiers silent this long is a failed run already: no use waiting for more.
    give_up = 3 * result.stall_limit
    broker = BrokerProcess(workdir / "data", log_path=workdir / "broker.log").start()
    copiers: dict[str, CopierProcess] = {}
    try:
        _create_topics(broker.bootstrap)
        ends = _fill(broker.bootstrap, records)
        events = Events()

        def start(name: str, incarnation: int) -> None:
            copiers[name] = CopierProcess(
                name, incarnation, broker.bootstrap, workdir, events, deadline + STEP_TIMEOUT
            )

        started = time.monotonic()
        stop_at = started + deadline
        for name in COPIERS:
            start(name, 1)
        if events.wait(lambda e: _progress(e, ends) >= records / 3, stop_at):
            result.faults.append(f"copier {VICTIM}1 killed at {time.monotonic() - started:.1f} s")
            copiers[VICTIM].kill()
            start(VICTIM, 2)
        if events.wait(lambda e: _progress(e, ends) >= 2 * records / 3, stop_at):
            result.faults.append(f"broker killed at {time.monotonic() - started:.1f} s")
            broker.kill()
            broker.start()
        events.wait(
            lambda e: _progress(e, ends) >= records or _silent_for(e, started) > give_up,
            stop_at,
        )
        finished = time.monotonic()
        for copier in copiers.values():
            copier.stop()
        result.seconds = finished - started
        with open(workdir / "events.jsonl", "w") as log:
            log.writelines(json.dumps(event) + "\n" for event in events.snapshot())
        _judge_events(result, events.snapshot(), ends, started, finished)
        _judge_output(result, _read_output(broker.bootstrap, ends), records)
    finally:
        for copier in copiers.values():
            copier.kill()
        broker.stop()
    return result


def _create_topics(bootstrap: str) -> None:
    admin = AdminClient(client_config({"bootstrap.servers": bootstrap}))
    futures = admin.create_topics(
        [NewTopic(topic, PARTITIONS, 1) for topic in (INPUT, OUTPUT)],
        request_timeout=STEP_TIMEOUT,
    )
    for future in futures.values():
        future.result(STEP_TIMEOUT)


def value_of(number: int) -> bytes:
    return b"%07d" % number


def _fill(bootstrap: str, records: int) -> dict[int, int]:
    """Write the numbered inputs round-robin over the partitions; returns each
    partition's end offset."""
    producer = Producer(client_config({"bootstrap.servers": bootstrap, "enable.idempotence": True}))
    ends = dict.fromkeys(range(PARTITIONS), 0)
    failed: list[KafkaError] = []

    def delivered(error: KafkaError | None, message: Any) -> None:
        if error is not None:
            failed.append(error)
        else:
            ends[message.partition()] = max(ends[message.partition()], message.offset() + 1)

    for number in range(records):
        value = value_of(number)
        while True:
            try:
                producer.produce(INPUT, value, key=value, partition=number % PARTITIONS,
                                 on_delivery=delivered)  # fmt: skip
                break
            except BufferError:
                producer.poll(0.1)
    if producer.flush(STEP_TIMEOUT) or failed:
        raise RuntimeError(f"filling the input failed: {failed[:1] or 'flush timed out'}")
    return ends


def _committed(events: list[dict[str, Any]]) -> dict[int, int]:
    """Per partition, the highest next offset any copier committed."""
    reached: dict[int, int] = {}
    for event in events:
        if event["ev"] == "committed":
            for partition, offset in event["offsets"].items():
                reached[int(partition)] = max(reached.get(int(partition), 0), offset)
    return reached


def _progress(events: list[dict[str, Any]], ends: dict[int, int]) -> int:
    """Inputs committed so far, counting each partition up to its end."""
    reached = _committed(events)
    return sum(min(reached.get(p, 0), end) for p, end in ends.items())


def _silent_for(events: list[dict[str, Any]], started: float) -> float:
    """Seconds since any copier last received input (or since ``started``)."""
    last = max((e["t"] for e in events if e["ev"] == "got"), default=started)
    return time.monotonic() - last


def _judge_events(result: LivenessResult, events: list[dict[str, Any]],
                  ends: dict[int, int], started: float, finished: float) -> None:  # fmt: skip
    result.commits = sum(e["ev"] == "committed" for e in events)
    result.aborts = sum(e["ev"] == "aborted" for e in events)
    # A copier that said why it stopped, or closed cleanly, needs no exit code report.
    closed = {e["copier"] for e in events if e["ev"] in ("closed", "fatal")}
    for event in events:
        if event["ev"] == "fatal":
            result.failures.append(f"{event['copier']}: {event['error']}")
        elif event["ev"] == "exit" and event["copier"] not in closed | {f"{VICTIM}1"}:
            # Hung past the stop timeout (then killed), or died of something unreported.
            result.failures.append(
                f"{event['copier']}: did not close cleanly (exit code {event['rc']})"
            )
    result.stall = longest_stall(events, ends, started, finished)


def _read_output(bootstrap: str, ends: dict[int, int]) -> dict[int, list[bytes]]:
    """Every committed value of the output topic, per partition, read to its end."""
    consumer = Consumer(
        client_config(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "liveness-checker",
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "enable.auto.commit": False,
            }
        )
    )
    consumer.assign([TopicPartition(OUTPUT, p, OFFSET_BEGINNING) for p in ends])
    values: dict[int, list[bytes]] = {p: [] for p in ends}
    at_end: set[int] = set()
    deadline = time.monotonic() + STEP_TIMEOUT
    try:
        while at_end != set(ends) and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                error = message.error()
                if error is None:
                    values[message.partition()].append(message.value())
                elif error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())
    finally:
        consumer.close()
    if at_end != set(ends):
        raise RuntimeError(f"the output could not be read to its end in {STEP_TIMEOUT:.0f} s")
    return values


def _judge_output(result: LivenessResult, values: dict[int, list[bytes]], records: int) -> None:
    every = [value for partition in values.values() for value in partition]
    expected = {value_of(number) for number in range(records)}
    distinct = set(every)
    result.copied = len(distinct & expected)
    result.lost = records - result.copied
    result.duplicates = len(every) - len(distinct) + len(distinct - expected)
    result.out_of_order = sum(
        after < before
        for partition in values.values()
        for before, after in itertools.pairwise(partition)
    )
