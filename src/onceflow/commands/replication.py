"""``onceflow replication``: what acks and min.insync.replicas promise, measured on a
3-node Apache Kafka cluster that the command starts and stops itself."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from onceflow.commands.common import print_json, table
from onceflow.testing.kafka import KafkaCluster, KafkaNotAvailable, KafkaStartError
from onceflow.verify.replication import CASES, AcksOutcome, measure

EXIT_FAILED = 1
LEGEND = (
    "lost: acknowledged records missing after the leader was SIGKILLed while both\n"
    "followers lagged (paused, still in the ISR).\n"
    "ISR < min: what a produce got once only one replica was in sync."
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "replication",
        help="measure acks=1/all x min.insync.replicas=1/2 on a 3-node Apache Kafka",
        description="Start a 3-node Apache Kafka cluster (real JVMs; needs a JDK and the "
        "jars of `make kafka`), then per acks and min.insync.replicas: kill the leader "
        "while both followers lag and count the acknowledged records lost, and produce "
        "with the ISR below the minimum. Exit 1 if acks=all with min.insync.replicas=2 "
        "lost a record or took a write below the minimum.",
    )
    parser.add_argument(
        "--records", type=int, default=2000, help="8 KiB records per case (half sent while lagging)"
    )
    parser.add_argument("--json", action="store_true", help="print the outcomes as JSON")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    console = Console(stderr=args.json)
    try:
        with tempfile.TemporaryDirectory(prefix="onceflow-replication-") as root:
            with console.status("starting a 3-node Apache Kafka cluster"):
                cluster = KafkaCluster(Path(root), 3).start()
            try:
                outcomes = []
                for acks, min_isr in CASES:
                    with console.status(f"acks={acks}, min.insync.replicas={min_isr}"):
                        outcomes += measure(cluster, [(acks, min_isr)], args.records)
            finally:
                with console.status("stopping the cluster"):
                    cluster.stop()
    except (KafkaNotAvailable, KafkaStartError) as exc:
        first_line = str(exc).splitlines()[0]
        print(f"onceflow replication: {first_line}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print_json([o.as_dict() for o in outcomes])
    else:
        console.print(render(outcomes))
        console.print(LEGEND)
    return 0 if all(o.holds for o in outcomes) else EXIT_FAILED


def render(outcomes: list[AcksOutcome]) -> object:
    """The outcomes as one table that fits 80 columns."""
    return table(
        None,
        ["acks", "min.isr", "sent", "acked", "lost", "ISR < min"],
        [
            [o.acks, o.min_insync_replicas, o.sent, o.acknowledged, o.lost, o.below_min_isr]
            for o in outcomes
        ],
    )
