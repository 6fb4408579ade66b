"""The order-charging processor as its own process, so tests can SIGKILL it.

``--crash-at POINT:N`` makes the worker kill itself with SIGKILL the Nth time the
runner reaches POINT (record_processed, before_offsets, before_commit, after_commit);
``--pause-at POINT:N`` makes it SIGSTOP itself there instead (a zombie, until the test
sends SIGCONT). Otherwise the worker runs until it has seen no record for ``--idle``
seconds and prints its stats as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import Callable

from onceflow.examples.orders import build_runner
from onceflow.guarantees import Guarantee
from onceflow.processing import Database, PostgresDatabase, SqliteDatabase


def open_db(url: str) -> Database:
    """``sqlite:PATH`` or a PostgreSQL conninfo/URL."""
    if url.startswith("sqlite:"):
        return SqliteDatabase(url.removeprefix("sqlite:"))
    return PostgresDatabase(url)


def fault_hook(
    crash_at: str | None, pause_at: str | None, work_ms: float
) -> Callable[[str], None] | None:
    """Send SIGKILL / SIGSTOP to this process the Nth time the runner reaches a point;
    spend ``work_ms`` per record (a simulated processing cost that keeps a run long
    enough for a second worker to join it midway)."""
    actions: dict[str, list[int]] = {}  # point -> [remaining, signal]
    for spec, sig in ((crash_at, signal.SIGKILL), (pause_at, signal.SIGSTOP)):
        if spec:
            point, _, nth = spec.partition(":")
            actions[point] = [int(nth or 1), sig]
    if not actions and not work_ms:
        return None

    def hook(reached: str) -> None:
        if reached == "record_processed" and work_ms:
            time.sleep(work_ms / 1000)
        action = actions.get(reached)
        if action is not None:
            action[0] -= 1
            if action[0] == 0:
                os.kill(os.getpid(), action[1])

    return hook


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--guarantee", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--payments", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--eos-sink", action="store_true")
    parser.add_argument("--crash-at")
    parser.add_argument("--pause-at")
    parser.add_argument(
        "--instance", help="the worker's name, its group.instance.id (default: GROUP-worker)"
    )
    parser.add_argument(
        "--defaults",
        action="store_true",
        help="the runner's own identity, session and transaction timeout (no overrides)",
    )
    parser.add_argument(
        "--cooperative",
        action="store_true",
        help="cooperative-sticky rebalancing, dynamic membership (a stopped worker leaves)",
    )
    parser.add_argument("--work-ms", type=float, default=0.0)
    parser.add_argument("--commit-every", type=int, default=40)
    parser.add_argument("--commit-interval-ms", type=int, default=200)
    parser.add_argument("--max-poll-records", type=int)
    parser.add_argument("--transaction-timeout-ms", type=int, default=10000)
    parser.add_argument("--no-dead-letters", action="store_true")
    parser.add_argument("--idle", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args()

    guarantee = Guarantee.parse(args.guarantee)
    producer_overrides = (
        {"transaction.timeout.ms": args.transaction_timeout_ms}
        if guarantee is Guarantee.EXACTLY_ONCE and not args.defaults
        else {}
    )
    consumer_overrides = (
        {}
        if args.defaults
        else {
            # Static membership: the restarted worker takes over its partitions at once
            # instead of waiting for the killed member's session to expire.
            "group.instance.id": args.instance or f"{args.group}-worker",
            "session.timeout.ms": 6000,
            # Members learn of a rebalance on their next heartbeat: keep rebalances quick.
            "heartbeat.interval.ms": 500,
        }
    )
    if args.cooperative:
        consumer_overrides["partition.assignment.strategy"] = "cooperative-sticky"
        consumer_overrides["group.instance.id"] = None
    runner = build_runner(
        args.bootstrap,
        guarantee,
        open_db(args.db),
        exactly_once_sink=args.eos_sink,
        group=args.group,
        payments_topic=args.payments,
        source=args.source,
        dead_letters=not args.no_dead_letters,
        commit_every=args.commit_every,
        commit_interval_ms=args.commit_interval_ms,
        max_poll_records=args.max_poll_records,
        consumer_overrides=consumer_overrides,
        instance=args.instance,
        producer_overrides=producer_overrides,
        fault_hook=fault_hook(args.crash_at, args.pause_at, args.work_ms),
    )
    stats = runner.run(idle_timeout=args.idle, max_seconds=args.max_seconds)
    print(json.dumps(dataclasses.asdict(stats)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
