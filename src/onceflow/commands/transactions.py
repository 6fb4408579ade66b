"""``onceflow transactions list|describe|abort``: find the transactions that hold a
partition's last stable offset back, and abort one as ``kafka-transactions.sh abort``
does."""

from __future__ import annotations

import argparse
import time

from onceflow.admin.cluster import Cluster
from onceflow.admin.report import OpenTransaction
from onceflow.commands.common import (
    add_action,
    add_family,
    human_age,
    print_json,
    print_tables,
    table,
)

PROG = "onceflow transactions"


def register(commands: argparse._SubParsersAction) -> None:
    actions = add_family(
        commands,
        "transactions",
        "find open (and hanging) transactions per partition, and abort one",
        "Transactions that partitions of any Kafka-compatible cluster show "
        "open: their producer, age and the last stable offset (LSO) they hold back. "
        "read_committed consumers wait at that offset until the transaction ends.",
    )
    listing = add_action(
        actions,
        "list",
        "list open transactions per partition with producer, age and the LSO they pin",
        _list,
        prog=PROG,
    )
    listing.add_argument(
        "--topic", action="append", help="only these topics (repeatable; default all)"
    )
    describe = add_action(
        actions,
        "describe",
        "show a transactional id's coordinator state and the partitions it holds open",
        _describe,
        prog=PROG,
    )
    describe.add_argument("transactional_id")
    abort = add_action(
        actions,
        "abort",
        "abort one producer's open transaction on one partition (writes an ABORT marker)",
        _abort,
        prog=PROG,
    )
    abort.add_argument("--topic", required=True)
    abort.add_argument("--partition", type=int, required=True)
    abort.add_argument("--producer-id", type=int, required=True)


def _open_table(title: str | None, found: list[OpenTransaction]) -> object:
    return table(
        title,
        ["partition", "pid", "epoch", "txn id", "age", "first", "LSO", "HW"],
        [
            [
                f"{t.topic}-{t.partition}",
                t.producer_id,
                t.producer_epoch,
                t.transactional_id,
                human_age(t.age_ms),
                t.first_offset,
                f"{t.last_stable}{' *' if t.pins_lso else ''}",
                t.high_watermark,
            ]
            for t in found
        ],
    )


def _list(cluster: Cluster, args: argparse.Namespace) -> int:
    found = cluster.open_transactions(args.topic)
    if args.json:
        print_json(found)
        return 0
    if not found:
        print("no open transactions")
        return 0
    print_tables(
        _open_table(None, found),
        "pid: producer id; first: offset of its first record; *: it holds the LSO back",
    )
    return 0


def _describe(cluster: Cluster, args: argparse.Namespace) -> int:
    detail = cluster.describe_transaction(args.transactional_id)
    if args.json:
        print_json(detail)
        return 0
    age = human_age(int(time.time() * 1000) - detail.start_ms) if detail.start_ms else None
    summary = table(
        f"transactional id {detail.transactional_id}",
        ["state", "producer", "epoch", "timeout", "age", "coordinator"],
        [[detail.state, detail.producer_id, detail.producer_epoch,
          f"{detail.timeout_ms // 1000}s", age, detail.coordinator]],
    )  # fmt: skip
    added = ", ".join(f"{t}-{p}" for t, p in detail.partitions) or "none"
    opened = (
        _open_table("open on", detail.open_on) if detail.open_on else "no partition shows it open"
    )
    print_tables(summary, f"partitions in the transaction: {added}", opened)
    return 0


def _abort(cluster: Cluster, args: argparse.Namespace) -> int:
    result = cluster.abort_transaction(args.topic, args.partition, args.producer_id)
    if args.json:
        print_json(result)
        return 0
    print(
        f"aborted producer {result.producer_id} (epoch {result.producer_epoch}) on "
        f"{result.topic}-{result.partition}: LSO {result.lso_before} -> {result.lso_after}"
    )
    return 0
