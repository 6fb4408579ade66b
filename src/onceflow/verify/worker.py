"""The processes of a verify workload: ``python -m onceflow.verify.worker ROLE ...``.

- ``producer`` sends orders (``make_orders``) with the guarantee's producer settings;
  ``--crash-after K`` SIGKILLs it right after its Kth ``produce()``, with records still
  queued or in flight.
- ``processor`` runs the order/payment pipeline (``build_runner``) with a recording
  runner; ``--crash-at POINT:N`` SIGKILLs it the Nth time the runner reaches POINT.
- ``reader`` tails a topic with ``read_committed`` until SIGTERM, recording what it sees.

Each appends its events to its own ``--history`` file.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from onceflow.client_logging import client_config
from onceflow.client_settings import read_properties
from onceflow.examples.orders import build_runner, make_orders
from onceflow.guarantees import Guarantee, producer_config
from onceflow.processing import Record
from onceflow.processing.runner import ProcessFn
from onceflow.verify.history import Recorder
from onceflow.verify.recording import RecordingConsumer, RecordingProducer, RecordingRunner
from onceflow.verify.workload import open_database

SESSION_TIMEOUT_MS = 6000
TRANSACTION_TIMEOUT_MS = 10000
ORDERS_PER_TRANSACTION = 50
RESEND_ROUNDS = 5
FLUSH_SECONDS = 30.0


def crash(recorder: Recorder, point: str) -> None:
    """Record the crash, then die the way a power cut kills a process."""
    recorder.record("fault", name="crash", detail=point)
    os.kill(os.getpid(), signal.SIGKILL)


def pause(recorder: Recorder, point: str) -> None:
    """Record the pause, then stop this process (SIGSTOP) until the orchestrator sends
    SIGCONT: a zombie, alive but silent while the others move on."""
    recorder.record("fault", name="pause", detail=point)  # flushed as it is written
    os.kill(os.getpid(), signal.SIGSTOP)


def crash_hook(
    recorder: Recorder,
    spec: str | None,
    flush: Callable[[], None],
    pause_spec: str | None = None,
) -> Callable[[str], None] | None:
    """A runner fault hook for ``POINT:N`` (``POINT:N+flush``: first wait until the
    outputs produced so far are appended, so an open transaction is left in the log);
    ``pause_spec`` (``POINT:N``) stops the process there instead of killing it."""
    actions: dict[str, tuple[list[int], Callable[[], None]]] = {}
    if spec:
        where, _, then = spec.partition("+")
        point, _, nth = where.partition(":")

        def die() -> None:
            if then == "flush":
                flush()
            crash(recorder, spec)

        actions[point] = ([int(nth or 1)], die)
    if pause_spec:
        point, _, nth = pause_spec.partition(":")
        actions[point] = ([int(nth or 1)], lambda: pause(recorder, pause_spec))
    if not actions:
        return None

    def hook(reached: str) -> None:
        action = actions.get(reached)
        if action is not None:
            remaining, act = action
            remaining[0] -= 1
            if remaining[0] == 0:
                act()

    return hook


def _settings(args: argparse.Namespace) -> dict[str, str]:
    """The user's client settings (security), from the file the orchestrator wrote."""
    return read_properties(args.client_config) if args.client_config else {}


# -- producer ------------------------------------------------------------------------


def run_producer(args: argparse.Namespace, recorder: Recorder) -> int:
    guarantee = Guarantee.parse(args.guarantee)
    orders = make_orders(args.orders)
    todo = [orders[i] for i in json.loads(Path(args.send).read_text())]
    overrides = _settings(args) | {"linger.ms": 20, "message.timeout.ms": 20000}
    config = {
        "bootstrap.servers": args.bootstrap,
        **producer_config(guarantee, overrides, transactional_id=args.tid),
    }
    producer = Producer(client_config(config))
    if args.tid:
        producer.init_transactions(FLUSH_SECONDS)
    recording = RecordingProducer(producer, recorder, transactional_id=args.tid)
    failed: list[int] = []
    sent = [0]

    def send(index: int) -> None:
        order = orders[index]

        def delivered(error: object, _message: object) -> None:
            if error is not None:
                failed.append(index)

        recording.produce(
            args.topic, key=order.customer.encode(), value=order.encode(), on_delivery=delivered
        )
        recording.poll(0)
        sent[0] += 1
        if args.crash_after and sent[0] == args.crash_after:
            crash(recorder, f"producer after {sent[0]} sends")

    indices = [int(o.order_id.removeprefix("order-")) for o in todo]
    if args.tid:
        _send_transactions(recording, indices, send)
    else:
        for index in indices:
            send(index)
        for _ in range(RESEND_ROUNDS):
            recording.flush(FLUSH_SECONDS)
            if guarantee is Guarantee.AT_MOST_ONCE or not failed:
                break
            # At least once: what was not acknowledged is sent again.
            retry, failed[:] = sorted(set(failed)), []
            for index in retry:
                send(index)
    recording.flush(FLUSH_SECONDS)
    return 0


def _send_transactions(
    producer: RecordingProducer, indices: list[int], send: Callable[[int], None]
) -> None:
    for start in range(0, len(indices), ORDERS_PER_TRANSACTION):
        chunk = indices[start : start + ORDERS_PER_TRANSACTION]
        for attempt in range(RESEND_ROUNDS):
            producer.begin_transaction()
            try:
                for index in chunk:
                    send(index)
                producer.commit_transaction(FLUSH_SECONDS)
                break
            except KafkaException as exc:
                if not exc.args[0].txn_requires_abort() or attempt == RESEND_ROUNDS - 1:
                    raise
                producer.abort_transaction(FLUSH_SECONDS)


# -- processor -----------------------------------------------------------------------


def _paced(process: ProcessFn, seconds: float) -> ProcessFn:
    # Spreads the workload over time so a fault injected mid-run lands mid-stream.
    def paced(record: Record) -> list[object]:
        time.sleep(seconds)
        return list(process(record))

    return paced  # type: ignore[return-value]


def _flush(runner: RecordingRunner) -> None:
    if runner.producer is not None:
        runner.producer.flush(FLUSH_SECONDS)


def run_processor(args: argparse.Namespace, recorder: Recorder) -> int:
    guarantee = Guarantee.parse(args.guarantee)
    producer_overrides = (
        {"transaction.timeout.ms": TRANSACTION_TIMEOUT_MS}
        if guarantee is Guarantee.EXACTLY_ONCE
        else {}
    )
    runner: RecordingRunner = build_runner(  # type: ignore[assignment]
        args.bootstrap,
        guarantee,
        open_database(args.db),
        exactly_once_sink=args.eos_sink,
        group=args.group,
        payments_topic=args.payments,
        source=args.source,
        runner_class=functools.partial(RecordingRunner, recorder=recorder),
        commit_every=40,
        commit_interval_ms=200,
        # Explicit, so every incarnation of the pipeline (a restart, the zombie's
        # successor) has the transactional id a restarted production instance would.
        transactional_id=args.transactional_id,
        consumer_overrides={
            # Static membership: a restarted worker takes its partitions back at once.
            "group.instance.id": args.instance,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
        },
        producer_overrides=producer_overrides,
        client_settings=_settings(args),
        fault_hook=crash_hook(recorder, args.crash_at, lambda: _flush(runner), args.pause_at),
    )
    if args.record_delay_ms:
        runner.process = _paced(runner.process, args.record_delay_ms / 1000)
    stats = runner.run(idle_timeout=args.idle, max_seconds=args.max_seconds)
    print(json.dumps(dataclasses.asdict(stats)), flush=True)
    return 0


# -- reader ----------------------------------------------------------------------------


def run_reader(args: argparse.Namespace, recorder: Recorder) -> int:
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    consumer = Consumer(
        client_config(
            {
                "bootstrap.servers": args.bootstrap,
                "group.id": f"verify-reader-{os.getpid()}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            },
            _settings(args),
        )
    )
    recording = RecordingConsumer(consumer, recorder, group="", isolation="read_committed")
    try:
        partitions = []
        for name in args.topic.split(","):
            topic = consumer.list_topics(name, timeout=FLUSH_SECONDS).topics[name]
            partitions += [TopicPartition(name, p, OFFSET_BEGINNING) for p in topic.partitions]
        consumer.assign(partitions)
        recorder.record("assign", partitions=[[p.topic, p.partition] for p in partitions])
        deadline = time.monotonic() + args.max_seconds
        while not stopping.is_set() and time.monotonic() < deadline:
            recording.consume(num_messages=500, timeout=0.1)
    finally:
        consumer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onceflow.verify.worker")
    parser.add_argument("role", choices=["producer", "processor", "reader"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--history", required=True)
    parser.add_argument("--client-config", type=Path, help="client settings (properties)")
    parser.add_argument("--proc", required=True)
    parser.add_argument("--guarantee", default="at-least-once")
    parser.add_argument("--topic", help="a topic; the reader takes a comma-separated list")
    parser.add_argument("--orders", type=int, default=0)
    parser.add_argument("--send", help="JSON file: indices of the orders to send")
    parser.add_argument("--tid", help="transactional id of the order producer")
    parser.add_argument("--crash-after", type=int, default=0)
    parser.add_argument("--db", help="a SQLite file or a postgresql:// URL")
    parser.add_argument("--source")
    parser.add_argument("--payments")
    parser.add_argument("--group")
    parser.add_argument("--instance")
    parser.add_argument("--transactional-id", help="the pipeline's transactional id")
    parser.add_argument("--eos-sink", action="store_true")
    parser.add_argument("--crash-at")
    parser.add_argument("--pause-at", help="POINT:N: SIGSTOP this process there (a zombie)")
    parser.add_argument("--record-delay-ms", type=float, default=0.0)
    parser.add_argument("--idle", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    recorder = Recorder(args.history, args.proc)
    role = {"producer": run_producer, "processor": run_processor, "reader": run_reader}
    try:
        return role[args.role](args, recorder)
    finally:
        recorder.close()


if __name__ == "__main__":
    sys.exit(main())
