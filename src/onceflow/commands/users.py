"""``onceflow users``: SCRAM users of an embedded broker, edited in its data dir.

Passwords are read from stdin (first line) or prompted for, never taken from the
command line, where other users of the machine could see them.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import sys

from onceflow.broker.security.credentials import CredentialStore
from onceflow.broker.security.scram import (
    DEFAULT_ITERATIONS,
    MAX_ITERATIONS,
    MIN_ITERATIONS,
    ScramCredential,
    ScramMechanism,
)
from onceflow.commands.common import add_local_action, print_tables, table

MECHANISM_NAMES = [m.sasl_name for m in ScramMechanism]


_action = functools.partial(add_local_action, open_store=CredentialStore, prog="onceflow users")


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``onceflow users add|remove|list``."""
    parser = commands.add_parser(
        "users",
        help="manage the SCRAM users of an embedded broker",
        description="Add, remove and list the users SASL clients log in as (PLAIN, "
        "SCRAM-SHA-256, SCRAM-SHA-512). Credentials are stored salted and iterated in "
        "DATA_DIR/users.json; a running broker sees changes at once.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = _action(actions, "add", "add a user or change its password", _add)
    add.add_argument("name", help="the user name")
    add.add_argument(
        "--mechanism", action="append", choices=MECHANISM_NAMES,
        help="SCRAM mechanism to store a credential for (repeatable; default: both)",
    )  # fmt: skip
    add.add_argument(
        "--iterations", type=int, default=DEFAULT_ITERATIONS,
        help=f"PBKDF2 iterations, {MIN_ITERATIONS}-{MAX_ITERATIONS} "
        f"(default {DEFAULT_ITERATIONS})",
    )  # fmt: skip
    remove = _action(actions, "remove", "remove a user's credentials", _remove)
    remove.add_argument("name", help="the user name")
    remove.add_argument(
        "--mechanism", action="append", choices=MECHANISM_NAMES,
        help="remove only this mechanism's credential (repeatable; default: all)",
    )  # fmt: skip
    _action(actions, "list", "list users and their mechanisms", _list)


def _read_password() -> str:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise ValueError("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise ValueError("the password is empty")
    return password


def _add(store: CredentialStore, args: argparse.Namespace) -> int:
    if not args.name:
        raise ValueError("the user name is empty")
    if not MIN_ITERATIONS <= args.iterations <= MAX_ITERATIONS:
        raise ValueError(f"--iterations must be {MIN_ITERATIONS}-{MAX_ITERATIONS}")
    password = _read_password()
    mechanisms = [ScramMechanism.from_name(n) for n in args.mechanism or MECHANISM_NAMES]
    for mechanism in dict.fromkeys(mechanisms):
        credential = ScramCredential.from_password(mechanism, password, args.iterations)
        store.upsert(args.name, mechanism, credential)
    names = [m.sasl_name for m in dict.fromkeys(mechanisms)]
    return _done(args, {"user": args.name, "mechanisms": names},
                 f"user {args.name}: {', '.join(names)}")  # fmt: skip


def _remove(store: CredentialStore, args: argparse.Namespace) -> int:
    mechanisms = [ScramMechanism.from_name(n) for n in args.mechanism or []] or [None]
    removed = [store.delete(args.name, mechanism) for mechanism in mechanisms]
    if not any(removed):
        raise ValueError(f"user {args.name} has no such credential")
    return _done(args, {"user": args.name, "removed": True}, f"user {args.name} removed")


def _done(args: argparse.Namespace, as_json: dict[str, object], as_text: str) -> int:
    print(json.dumps(as_json) if args.json else as_text)
    return 0


def _list(store: CredentialStore, args: argparse.Namespace) -> int:
    users = store.users()
    rows = [
        (name, mechanism.sasl_name, credential.iterations)
        for name, held in sorted(users.items())
        for mechanism, credential in sorted(held.items(), key=lambda item: item[0].code)
    ]
    if args.json:
        print(json.dumps([{"user": u, "mechanism": m, "iterations": i} for u, m, i in rows]))
    else:
        print_tables(table(None, ("user", "mechanism", "iterations"), rows))
    return 0
