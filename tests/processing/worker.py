"""The order-charging processor as its own process, so tests can SIGKILL it.

``--crash-at POINT:N`` makes the worker kill itself with SIGKILL the Nth time the
runner reaches POINT (record_processed, before_commit, after_commit). Without it the
worker runs until it has seen no record for ``--idle`` seconds and prints its stats
as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Callable

from onceflow.examples.orders import build_runner
from onceflow.guarantees import Guarantee
from onceflow.processing import Database, PostgresDatabase, SqliteDatabase


def open_db(url: str) -> Database:
    """``sqlite:PATH`` or a PostgreSQL conninfo/URL."""
    if url.startswith("sqlite:"):
        return SqliteDatabase(url.removeprefix("sqlite:"))
    return PostgresDatabase(url)


def crash_hook(spec: str | None) -> Callable[[str], None] | None:
    if not spec:
        return None
    point, _, nth = spec.partition(":")
    remaining = {"n": int(nth or 1)}

    def hook(reached: str) -> None:
        if reached == point:
            remaining["n"] -= 1
            if remaining["n"] == 0:
                os.kill(os.getpid(), signal.SIGKILL)

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
    parser.add_argument("--no-dead-letters", action="store_true")
    parser.add_argument("--idle", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args()

    guarantee = Guarantee.parse(args.guarantee)
    producer_overrides = (
        {"transaction.timeout.ms": 10000} if guarantee is Guarantee.EXACTLY_ONCE else {}
    )
    runner = build_runner(
        args.bootstrap,
        guarantee,
        open_db(args.db),
        exactly_once_sink=args.eos_sink,
        group=args.group,
        payments_topic=args.payments,
        source=args.source,
        dead_letters=not args.no_dead_letters,
        commit_every=40,
        commit_interval_ms=200,
        consumer_overrides={
            # Static membership: the restarted worker takes over its partitions at once
            # instead of waiting for the killed member's session to expire.
            "group.instance.id": f"{args.group}-worker",
            "session.timeout.ms": 6000,
        },
        producer_overrides=producer_overrides,
        fault_hook=crash_hook(args.crash_at),
    )
    stats = runner.run(idle_timeout=args.idle, max_seconds=args.max_seconds)
    print(json.dumps(dataclasses.asdict(stats)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
