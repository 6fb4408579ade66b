"""What every operator command shares: --bootstrap, the client settings (--client-config,
-X) and --json, a cluster session, one readable error line, and tables sized to the
terminal (80 columns when not a tty)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from onceflow import client_settings
from onceflow.admin.cluster import DEFAULT_TIMEOUT, AdminError, Cluster
from onceflow.admin.report import to_json
from onceflow.broker.security.shared_file import SharedFileError

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
EXIT_FAILED = 1

Action = Callable[[Cluster, argparse.Namespace], int]


def add_family(
    commands: argparse._SubParsersAction, name: str, help_: str, description: str
) -> argparse._SubParsersAction:
    """``onceflow NAME``, whose ACTION subcommands the caller adds with ``add_action``."""
    parser = commands.add_parser(name, help=help_, description=description)
    return parser.add_subparsers(dest="action", required=True, metavar="ACTION")


def add_action(
    actions: argparse._SubParsersAction,
    name: str,
    help_: str,
    action: Action,
    *,
    prog: str,
) -> argparse.ArgumentParser:
    """A subcommand with --bootstrap, the client settings, --timeout and --json that runs
    ``action``."""
    parser = actions.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
    parser.add_argument(
        "--bootstrap",
        default=DEFAULT_BOOTSTRAP,
        help=f"bootstrap.servers of any Kafka-compatible cluster (default {DEFAULT_BOOTSTRAP})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for each answer (default {DEFAULT_TIMEOUT:g})",
    )
    client_settings.add_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=lambda args: _run(action, args, prog))
    return parser


def add_local_action(
    actions: argparse._SubParsersAction,
    name: str,
    help_: str,
    action: Callable[[Any, argparse.Namespace], int],
    *,
    open_store: Callable[[Path], Any],
    prog: str,
) -> argparse.ArgumentParser:
    """A subcommand with --data-dir and --json that runs ``action(store, args)`` on a
    store of a broker's data dir; a ValueError or a SharedFileError prints one line and
    exits 1."""
    parser = actions.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
    parser.add_argument(
        "--data-dir", type=Path, default=Path("onceflow-data"),
        help="the broker's data dir (default onceflow-data)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")

    def run(args: argparse.Namespace) -> int:
        try:
            return action(open_store(args.data_dir), args)
        except (ValueError, SharedFileError) as exc:
            print(f"{prog} {name}: {exc}", file=sys.stderr)
            return EXIT_FAILED

    parser.set_defaults(run=run)
    return parser


def _run(action: Action, args: argparse.Namespace, prog: str) -> int:
    try:
        settings = client_settings.from_arguments(args)
        with Cluster(args.bootstrap, args.timeout, settings) as cluster:
            return action(cluster, args)
    except (AdminError, client_settings.ClientSettingsError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def print_json(value: Any) -> None:
    print(json.dumps(to_json(value), indent=2))


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A table whose numeric columns are right-aligned; None prints as '-'."""
    shown = Table(title=title, title_justify="left")
    numeric = [
        bool(rows) and all(isinstance(row[i], int) or row[i] is None for row in rows)
        for i in range(len(columns))
    ]
    for name, is_number in zip(columns, numeric, strict=True):
        shown.add_column(name, justify="right" if is_number else "left", overflow="fold")
    for row in rows:
        shown.add_row(*("-" if cell is None else str(cell) for cell in row))
    return shown


def print_tables(*tables: Table | str) -> None:
    console = Console()
    for item in tables:
        console.print(item)


def human_bytes(size: int | None) -> str | None:
    if size is None:
        return None
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def human_age(ms: int | None) -> str | None:
    if ms is None:
        return None
    seconds = ms // 1000
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def key_values(pairs: Sequence[str], what: str) -> dict[str, str]:
    """{"k": "v"} from ["k=v", ...]; raises AdminError naming the bad one."""
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise AdminError(f"{what} must be KEY=VALUE, got {pair!r}")
        parsed[key] = value
    return parsed
