"""The ``onceflow`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from onceflow import client_settings
from onceflow import commands as operator_commands
from onceflow.broker.config import DEFAULT_SEGMENT_BYTES, BrokerConfig, FlushPolicy
from onceflow.broker.server import Broker, BrokerStartError
from onceflow.client_logging import show_client_logs
from onceflow.commands import acls, broker_security, users

EXIT_USAGE = 2
# The broker settings a flag leaves alone.
_DEFAULTS = BrokerConfig()


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
    limits = broker.add_argument_group("resource limits (Kafka's names where it has them)")
    limits.add_argument(
        "--socket-request-max-bytes",
        type=_positive,
        default=_DEFAULTS.max_request_bytes,
        help="largest request accepted; a larger one closes its connection",
    )
    limits.add_argument(
        "--max-connections", type=_positive, help="open connections allowed in total"
    )
    limits.add_argument(
        "--max-connections-per-ip",
        type=_positive,
        help="open connections allowed from one client address",
    )
    limits.add_argument(
        "--max-inflight-requests",
        type=_positive,
        default=_DEFAULTS.max_inflight_requests,
        help="unanswered requests per connection before it is no longer read",
    )
    limits.add_argument(
        "--max-inflight-bytes",
        type=_positive,
        default=_DEFAULTS.max_inflight_bytes,
        help="unanswered request bytes per connection before it is no longer read",
    )
    limits.add_argument(
        "--queued-max-request-bytes",
        type=_positive,
        default=_DEFAULTS.queued_max_request_bytes,
        help="request bytes being read or answered, broker-wide, before connections "
        "wait to read more",
    )
    limits.add_argument(
        "--request-read-timeout-ms",
        type=_positive,
        default=_DEFAULTS.request_read_timeout_ms,
        help="close a connection whose request has not arrived whole this long after "
        "its first byte (a slow client)",
    )
    broker_security.add_arguments(broker)
    broker.set_defaults(run=_run_broker)

    demo = commands.add_parser(
        "demo",
        help="run the order/payment pipeline under each guarantee, then under faults",
        description="On embedded brokers: run the order/payment pipeline once per "
        "guarantee, then measure every guarantee against every failure point (crashes, "
        "a lost produce response, broker kill -9, a network cut, a zombie) and print the "
        "matrix: the default matrix of `onceflow verify`.",
    )
    demo.add_argument(
        "--orders", type=_positive, default=5000, help="orders for the fault-free runs"
    )
    demo.add_argument(
        "--no-faults",
        dest="faults",
        action="store_false",
        help="skip the fault matrix (26 runs, a few minutes on 2 cores)",
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

    from onceflow.verify.faults import FAULTS, NO_FAULT

    verify = commands.add_parser(
        "verify",
        help="run the order/payment pipeline under injected faults and check the history",
        description="Run a workload under injected faults against the embedded broker (or "
        "--bootstrap), record a history and check it for lost, duplicated and aborted-but-"
        "visible records. Without --fault every fault the target takes gets a run of its "
        "own, per guarantee. Exit 0 if every run passed, 1 if one failed, 2 if one was "
        "inconclusive (a fault did not land, the workload did not finish, a process died "
        "of something else).",
    )
    verify.add_argument(
        "--guarantee", action="append", help="at-most-once, at-least-once or exactly-once "
        "(repeatable; default: all three)",
    )  # fmt: skip
    verify.add_argument(
        "--fault", action="append", default=[], help="inject these faults together in one "
        "run per guarantee (repeatable; default: each applicable fault in a run of its "
        f"own; {NO_FAULT}: a fault-free smoke test): {', '.join(FAULTS)}; with --command: "
        "instance-kill, instance-pause, lost-produce-response, network-cut, broker-kill",
    )  # fmt: skip
    verify.add_argument("--parallel", type=_positive, default=2, help="runs at a time (default 2)")
    verify.add_argument("--orders", type=_positive, default=400, help="orders to charge")
    verify.add_argument(
        "--bootstrap", help="a Kafka-compatible cluster instead of the embedded one"
    )
    verify.add_argument(
        "--kafka-nodes",
        type=_positive,
        metavar="N",
        help="start an Apache Kafka cluster of N nodes (real JVMs: a JDK and the jars of "
        "`make kafka`) and verify on it, leader and coordinator kills included",
    )
    client_settings.add_arguments(
        verify.add_argument_group(
            "client settings (with --bootstrap): passed to every client of the runs"
        )
    )
    verify.add_argument("--json", action="store_true", help="print JSON instead of a table")
    verify.add_argument("--report", type=Path, help="write report.md and a PNG chart here")
    program = verify.add_argument_group(
        "black-box mode (--command): verify any program, see the README's contract"
    )
    program.add_argument("--command", help="the program to run; {bootstrap}, {instance}, "
                         "{input} and {output} are filled in")  # fmt: skip
    program.add_argument("--input", help="topic the verifier writes and the program reads")
    program.add_argument("--output", help="topic the program writes, one record per input")
    program.add_argument("--key-header", help="header holding the input's key (default: "
                         "the output record's key)")  # fmt: skip
    program.add_argument("--instances", type=_positive, default=1, help="copies to run")
    program.add_argument("--seed", type=int, help="seed of the fault schedule (default: "
                         "random; printed, so a run can be replayed)")  # fmt: skip
    program.add_argument("--inputs", type=_positive, default=300, help="input records")
    program.add_argument("--kills", type=int, default=4, help="SIGKILL rounds (default 4)")
    program.add_argument("--pause-seconds", type=float, default=10.0, help="how long an "
                         "instance is paused; must exceed its session timeout")  # fmt: skip
    program.add_argument("--sql", help="query whose first column lists the keys the "
                         "program applied to its database (needs --dsn)")  # fmt: skip
    program.add_argument("--dsn", help="the database: a SQLite path or a postgresql:// URL")
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
        max_request_bytes=args.socket_request_max_bytes,
        max_connections=args.max_connections or _DEFAULTS.max_connections,
        max_connections_per_ip=args.max_connections_per_ip or _DEFAULTS.max_connections_per_ip,
        max_inflight_requests=args.max_inflight_requests,
        max_inflight_bytes=args.max_inflight_bytes,
        queued_max_request_bytes=args.queued_max_request_bytes,
        request_read_timeout_ms=args.request_read_timeout_ms,
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
        matrix = showcase(console)
        # A failure (1) outranks an inconclusive run (2).
        status = 1 if 1 in (status, matrix) else max(status, matrix)
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
    if args.command is not None:
        return _run_verify_program(args)
    from rich.console import Console

    from onceflow.guarantees import Guarantee
    from onceflow.testing.kafka import KafkaNotAvailable, KafkaStartError, temporary_cluster
    from onceflow.verify import faults as fault_registry
    from onceflow.verify import report
    from onceflow.verify.matrix import plan, run_cells, verify_cell
    from onceflow.verify.outcome import exit_code
    from onceflow.verify.run import target_of
    from onceflow.verify.sinks import SinkDatabases

    if args.kafka_nodes and args.bootstrap:
        print("onceflow verify: --kafka-nodes and --bootstrap exclude each other", file=sys.stderr)
        return EXIT_USAGE
    try:
        settings = _verify_client_settings(args)
    except client_settings.ClientSettingsError as exc:
        print(f"onceflow verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    target = (
        fault_registry.cluster_target(args.kafka_nodes)
        if args.kafka_nodes
        else target_of(args.bootstrap)
    )
    try:
        guarantees = [Guarantee.parse(g) for g in args.guarantee or [g.value for g in Guarantee]]
        fault_registry.parse(args.fault, target)
    except ValueError as exc:
        print(f"onceflow verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    console = Console(stderr=args.json)
    cells = plan(guarantees, args.fault, target)
    with contextlib.ExitStack() as stack:
        options: dict[str, Any] = {
            "orders": args.orders, "bootstrap": args.bootstrap, "client_settings": settings,
        }  # fmt: skip
        parallel = args.parallel
        if args.kafka_nodes:
            try:
                with console.status(f"starting a {args.kafka_nodes}-node Apache Kafka cluster"):
                    cluster = stack.enter_context(temporary_cluster(args.kafka_nodes))
            except (KafkaNotAvailable, KafkaStartError) as exc:
                print(f"onceflow verify: {str(exc).splitlines()[0]}", file=sys.stderr)
                return EXIT_USAGE
            # One run at a time: a node killed for one run would be a fault in the other.
            options, parallel = {"orders": args.orders, "cluster": cluster}, 1
        databases = stack.enter_context(SinkDatabases())
        results = run_cells(
            cells,
            lambda cell, step: verify_cell(cell, step, databases, **options),
            console,
            parallel=parallel,
        )
    if args.json:
        print(report.to_json(results))
    else:
        report.print_results(console, results)
    if args.report is not None:
        path = report.markdown(results, args.report)
        console.print(f"report written to {path}")
    return exit_code(r.outcome for r in results)


def _verify_client_settings(args: argparse.Namespace) -> dict[str, str]:
    """The client settings of ``onceflow verify``, checked before any run starts (the
    clients they are for are on a cluster given by --bootstrap)."""
    settings = client_settings.from_arguments(args)
    if settings and not args.bootstrap:
        raise client_settings.ClientSettingsError(
            "--client-config and -X need --bootstrap: the embedded broker is PLAINTEXT"
        )
    client_settings.check(settings)
    return settings


def _run_verify_program(args: argparse.Namespace) -> int:
    import random

    from rich.console import Console

    from onceflow.guarantees import Guarantee
    from onceflow.verify import report
    from onceflow.verify.blackbox import Program, verify_program

    problem = None
    if args.client_config or args.client_settings:
        problem = "--client-config and -X do not apply to --command: configure the program"
    elif not (args.input and args.output):
        problem = "--command needs --input and --output"
    elif bool(args.sql) != bool(args.dsn):
        problem = "--sql and --dsn go together"
    elif args.guarantee and len(args.guarantee) > 1:
        problem = "black-box mode judges one --guarantee"
    if problem is not None:
        print(f"onceflow verify: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        guarantee = Guarantee.parse(args.guarantee[0] if args.guarantee else "exactly-once")
    except ValueError as exc:
        print(f"onceflow verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    console = Console(stderr=args.json)
    console.print(f"{guarantee.value}: {args.command!r}, seed {seed}")
    program = Program(
        args.command, args.input, args.output, key_header=args.key_header,
        instances=args.instances, sql=args.sql, dsn=args.dsn,
    )  # fmt: skip
    try:
        with console.status("running the program under faults"):
            result = verify_program(
                program, guarantee, seed=seed, inputs=args.inputs, kills=args.kills,
                pause_seconds=args.pause_seconds, bootstrap=args.bootstrap,
                faults=args.fault or None,
            )  # fmt: skip
    except ValueError as exc:
        print(f"onceflow verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(report.to_json([result]))
    else:
        report.print_results(console, [result])
    if args.report is not None:
        console.print(f"report written to {report.markdown([result], args.report)}")
    return result.outcome.exit_code
