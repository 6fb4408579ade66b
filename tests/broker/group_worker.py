"""A confluent-kafka group consumer run as its own process, and its remote control.

Group tests kill consumers with SIGKILL, so each consumer is a separate Python
process running this file as a script. It reports what it does as JSON lines on
stdout (assignments, revocations, records, commits); ``Worker`` (imported by the
tests) starts it, collects the events on a thread, and waits for conditions on them.

Modes:

- ``after``: process (report) a record, then commit it synchronously (at least once).
- ``before``: commit a record synchronously, then process it (at most once);
  ``--crash-at N`` exits hard between the commit and the processing of the Nth record.

``--stop-after N`` closes the consumer cleanly after its Nth record; so does closing
the worker's stdin.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onceflow.testing.child import close_and_wait

DEFAULT_WAIT = 30.0


# -- the consumer process ----------------------------------------------------------------


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"ev": event, "t": time.monotonic(), **fields}) + "\n")
    sys.stdout.flush()


def _run(args: argparse.Namespace) -> int:
    from confluent_kafka import Consumer, KafkaException

    config: dict[str, Any] = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": args.session_ms,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": args.assignor,
        "topic.metadata.refresh.interval.ms": 1000,
    }
    if args.instance_id:
        config["group.instance.id"] = args.instance_id
    consumer = Consumer(config)

    def on_assign(_: Any, partitions: list[Any]) -> None:
        _emit("assign", parts=sorted(p.partition for p in partitions))

    def on_revoke(_: Any, partitions: list[Any]) -> None:
        _emit("revoke", parts=sorted(p.partition for p in partitions))

    consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke)
    _emit("started", pid=os.getpid())
    seen = 0
    deadline = time.monotonic() + args.max_seconds
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sys.stdin], [], [], 0)
        if readable and not sys.stdin.readline():
            break
        message = consumer.poll(0.1)
        if message is None or message.error():
            continue
        seen += 1
        record = {"p": message.partition(), "o": message.offset(), "v": message.value().decode()}
        if args.mode == "after":
            _emit("rec", **record)
        try:
            consumer.commit(message=message, asynchronous=False)
        except KafkaException as exc:
            _emit("commit_failed", error=str(exc), **record)
            continue
        _emit("committed", **record)
        if args.mode == "before":
            if seen == args.crash_at:
                # Crash after the commit was acknowledged, before the processing.
                os._exit(17)
            _emit("rec", **record)
        if seen == args.stop_after:
            break
    consumer.close()
    _emit("closed")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--mode", choices=["after", "before"], default="after")
    parser.add_argument("--crash-at", type=int, default=0)
    parser.add_argument("--stop-after", type=int, default=0)
    parser.add_argument("--instance-id", default="")
    parser.add_argument("--session-ms", type=int, default=6000)
    parser.add_argument("--assignor", default="range")
    parser.add_argument("--max-seconds", type=float, default=120.0)
    return _run(parser.parse_args())


# -- the remote control -------------------------------------------------------------------


class Worker:
    """One consumer process and the events it has reported so far."""

    def __init__(self, name: str, log_dir: Path, **options: Any) -> None:
        self.name = name
        command = [sys.executable, str(Path(__file__).resolve())]
        for key, value in options.items():
            command += [f"--{key.replace('_', '-')}", str(value)]
        self._stderr = open(log_dir / f"worker-{name}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
        )
        self.events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            event = json.loads(line)
            with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        # Reaped before the waiters are told, so ``exited()`` holds when they look.
        self.process.wait()
        with self._changed:
            self.events.append({"ev": "exit"})
            self._changed.notify_all()

    def wait_for(
        self, condition: Callable[[Worker], bool], timeout: float = DEFAULT_WAIT, what: str = ""
    ) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"worker {self.name}: timed out waiting for {what or condition}; "
                        f"last events {self.events[-5:]}"
                    )
                self._changed.wait(remaining)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._changed:
            return list(self.events)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.snapshot() if e["ev"] == kind]

    def assignment(self) -> set[int]:
        """The partitions currently assigned, replaying assign/revoke events.

        Eager protocols revoke everything and assign the new set; cooperative ones
        revoke and assign increments; replaying both ways gives the current set.
        """
        owned: set[int] = set()
        for event in self.snapshot():
            if event["ev"] == "assign":
                owned |= set(event["parts"])
            elif event["ev"] == "revoke":
                owned -= set(event["parts"])
        return owned

    def values(self) -> list[str]:
        return [e["v"] for e in self.of("rec")]

    def exited(self) -> bool:
        return self.process.poll() is not None

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        """Close the consumer cleanly (it leaves the group) and wait for the exit."""
        close_and_wait(self.process, timeout)
        self._reader.join(5)
        self._stderr.close()
        return self.process.returncode

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        self._reader.join(5)
        self._stderr.close()


if __name__ == "__main__":
    sys.exit(main())
