"""The ``onceflow`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from onceflow import commands as operator_commands
from onceflow.broker.config import DEFAULT_SEGMENT_BYTES, BrokerConfig, FlushPolicy
from onceflow.broker.server import Broker, BrokerStartError
from onceflow.client_logging import show_client_logs
from onceflow.commands import acls, broker_security, users

EXIT_USAGE = 2


def _positive(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onceflow",
        description="Kafka delivery guarantees made a one-word choice, and proven.",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="what to log to stderr (DEBUG adds the Kafka client's own log lines)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    broker = commands.add_parser(
        "broker",
        help="run the embedded Kafka-compatible broker in the foreground",
        description="Run a single-node, durable, Kafka-wire-compatible broker until "
        "SIGINT or SIGTERM.",
    )
    broker.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)"
    )
    broker.add_argument(
        "--advertised-host",
        help="host clients are told to connect to (default: --host, or 127.0.0.1 when "
        "--host is 0.0.0.0, ::1 when it is ::)",
    )
    broker.add_argument(
        "--port", type=_port, default=9092, help="port to listen on (0 picks a free one)"
    )
    broker.add_argument(
        "--data-dir", type=Path, default=Path("onceflow-data"), help="where the logs live"
    )
    broker.add_argument(
        "--flush",
        choices=[p.value for p in FlushPolicy],
        default=FlushPolicy.ALWAYS.value,
        help="always: acknowledge only fsynced data (group commit); never: leave it to the OS",
    )
    broker.add_argument(
        "--segment-bytes",
        type=_positive,
        default=DEFAULT_SEGMENT_BYTES,
        help="roll a new segment file past this size",
    )
    broker.add_argument(
        "--default-partitions",
        type=_positive,
        default=1,
        help="partitions of auto-created topics and of CreateTopics asking for the default",
    )
    broker.add_argument(
        "--no-auto-create",
        dest="auto_create",
        action="store_false",
        help="do not create unknown topics on metadata requests (produce never does)",
    )
    broker.add_argument(
        "--retention-check-interval-ms",
        type=_positive,
        default=300_000,
        help="how often retention and segment.ms are applied (Kafka's "
        "log.retention.check.interval.ms)",
    )
    broker.add_argument(
        "--cleaner-backoff-ms",
        type=_positive,
        default=15_000,
        help="how often compacted topics are looked at for cleaning (log.cleaner.backoff.ms)",
    )
    broker.add_argument(
        "--metrics-port",
        type=_port,
        metavar="N",
        help="serve Prometheus metrics at http://HOST:N/metrics (0 picks a free port; "
        "default: no metrics)",
    )
    broker_security.add_arguments(broker)
    broker.set_defaults(run=_run_broker)

    demo = commands.add_parser(
        "demo",
        help="run the order/payment pipeline under each guarantee, then under faults",
        description="On embedded brokers: run the order/payment pipeline once per "
        "guarantee, then measure every guarantee against every failure point (crashes, "
        "a lost produce response, broker kill -9) and print the matrix.",
    )
    demo.add_argument(
        "--orders", type=_positive, default=5000, help="orders for the fault-free runs"
    )
    demo.add_argument(
        "--no-faults",
        dest="faults",
        action="store_false",
        help="skip the fault matrix (it takes about a minute)",
    )
    demo.set_defaults(run=_run_demo)

    config = commands.add_parser(
        "config",
        help="print the client settings a delivery guarantee needs, and why",
        description="Print the producer and consumer settings of a guarantee "
        "(at-most-once, at-least-once, exactly-once) with a reason for each.",
    )
    config.add_argument("guarantee", help="at-most-once, at-least-once or exactly-once")
    config.add_argument("--json", action="store_true", help="print JSON instead of a table")
    config.set_defaults(run=_run_config)

    verify = commands.add_parser(
        "verify",
        help="run the order/payment pipeline under injected faults and check the history",
        description="Run a workload under injected faults against the embedded broker (or "
        "--bootstrap), record a history, check it for lost, duplicated and aborted-but-"
        "visible records, and exit 1 if the guarantee's expectation is not met.",
    )
    verify.add_argument(
        "--guarantee", action="append", help="at-most-once, at-least-once or exactly-once "
        "(repeatable; default: all three)",
    )  # fmt: skip
    verify.add_argument(
        "--fault", action="append", default=[], help="a fault to inject (repeatable): "
        "producer-crash, lost-produce-response, crash-before-commit, crash-after-commit, "
        "crash-mid-transaction, broker-kill, network-cut, zombie",
    )  # fmt: skip
    verify.add_argument("--orders", type=_positive, default=400, help="orders to charge")
    verify.add_argument(
        "--bootstrap", help="a Kafka-compatible cluster instead of the embedded one"
    )
    verify.add_argument("--json", action="store_true", help="print JSON instead of a table")
    verify.add_argument("--report", type=Path, help="write report.md and a PNG chart here")
    verify.set_defaults(run=_run_verify)
    operator_commands.register(commands)
    users.register(commands)
    acls.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    show_client_logs(args.log_level == "DEBUG")
    return args.run(args)


def _run_broker(args: argparse.Namespace) -> int:
    try:
        security = broker_security.config_values(args)
    except broker_security.SecurityOptionError as exc:
        print(f"onceflow broker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    config = BrokerConfig(
        data_dir=args.data_dir,
        host=args.host,
        advertised_host=args.advertised_host,
        port=args.port,
        flush=FlushPolicy(args.flush),
        segment_bytes=args.segment_bytes,
        default_partitions=args.default_partitions,
        auto_create_topics=args.auto_create,
        log_retention_check_interval_ms=args.retention_check_interval_ms,
        log_cleaner_backoff_ms=args.cleaner_backoff_ms,
        metrics_port=args.metrics_port,
        **security,
    )
    return asyncio.run(_serve(config, trust_hint=args.tls_self_signed is not None))


async def _serve(config: BrokerConfig, trust_hint: bool = False) -> int:
    broker = Broker(config)
    try:
        await broker.start()
    except BrokerStartError as exc:
        print(f"onceflow broker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    first = broker.listeners[0]
    print(
        f"onceflow broker listening on {first.host}:{broker.port} "
        f"(clients use {broker.bootstrap}, data dir {config.data_dir}, "
        f"flush {config.flush.value})",
        flush=True,
    )
    if config.listeners:
        for listener in broker.listeners:
            host, port = listener.client_host(), listener.advertised_port or listener.port
            print(
                f"listener {listener} {listener.protocol.value}, clients use {host}:{port}",
                flush=True,
            )
    if trust_hint and config.tls is not None:
        print(f"TLS clients trust {config.tls.cafile}", flush=True)
    if broker.metrics is not None:
        print(f"metrics at http://{broker.host}:{broker.metrics.port}/metrics", flush=True)
    await stopping.wait()
    await broker.stop()
    print("onceflow broker stopped", flush=True)
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from onceflow.demo import run_demo

    console = Console()
    status = run_demo(args.orders, console)
    if args.faults:
        from onceflow.verify import showcase

        console.rule("the same pipeline under injected faults")
        status = max(status, showcase(console))
    return status


def _run_config(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from onceflow.guarantees import Guarantee, settings_table

    try:
        guarantee = Guarantee.parse(args.guarantee)
    except ValueError as exc:
        print(f"onceflow config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rows = settings_table(guarantee)
    if args.json:
        print(json.dumps({"guarantee": guarantee.value, "settings": rows}, indent=2))
        return 0
    table = Table(title=f"{guarantee.value}: client settings")
    for column in ("client", "setting", "value", "required", "reason"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["client"], row["key"], str(row["value"]), "yes" if row["required"] else "default",
            row["reason"],
        )  # fmt: skip
    Console(width=160).print(table)
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from onceflow.guarantees import Guarantee
    from onceflow.verify import RunError, report, verify
    from onceflow.verify import faults as fault_registry

    try:
        guarantees = [Guarantee.parse(g) for g in args.guarantee or [g.value for g in Guarantee]]
        fault_registry.parse(args.fault, embedded=args.bootstrap is None)
    except ValueError as exc:
        print(f"onceflow verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    console = Console(stderr=args.json)
    results = []
    with Progress(console=console, transient=True) as progress:
        for guarantee in guarantees:
            task = progress.add_task(guarantee.value, total=None)

            def step(what: str, done: int, total: int, task: int = task) -> None:
                progress.update(task, description=what, completed=done, total=total)

            try:
                results.append(
                    verify(guarantee, args.fault, orders=args.orders, bootstrap=args.bootstrap,
                           progress=step)
                )  # fmt: skip
            except RunError as exc:
                console.print(f"[red]onceflow verify: the {guarantee.value} run broke: {exc}")
                return 1
            progress.remove_task(task)
    if args.json:
        print(report.to_json(results))
    else:
        report.print_results(console, results)
    if args.report is not None:
        path = report.markdown(results, args.report)
        console.print(f"report written to {path}")
    return 0 if all(r.ok for r in results) else 1
