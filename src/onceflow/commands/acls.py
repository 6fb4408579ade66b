"""``onceflow acls``: the ACLs of an embedded broker, edited in its data dir (a running
broker sees changes at once). Kafka's tools and AdminClients use CreateAcls instead."""

from __future__ import annotations

import argparse
import functools
import json

from onceflow.broker.security.acls import (
    CLUSTER_NAME,
    Acl,
    AclFilter,
    AclStore,
    Operation,
    PatternType,
    Permission,
    ResourceType,
)
from onceflow.commands.common import add_local_action, print_tables, table

OPERATIONS = [o.name for o in Operation if o is not Operation.ANY]


_action = functools.partial(add_local_action, open_store=AclStore, prog="onceflow acls")


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``onceflow acls add|remove|list``."""
    parser = commands.add_parser(
        "acls",
        help="manage the ACLs of an embedded broker (started with --acls)",
        description="Allow or deny principals operations on topics, groups, "
        "transactional ids and the cluster, in Kafka's model. Stored in DATA_DIR/acls.json.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help_, run in (
        ("add", "add ACLs: each --operation for the principal on the resource", _add),
        ("remove", "remove exactly the ACLs add would have added", _remove),
    ):
        action = _action(actions, name, help_, run)
        _rule_arguments(action)
    listing = _action(actions, "list", "list ACLs", _list)
    listing.add_argument("--principal", help="only this principal's ACLs")


def _rule_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--principal", required=True, help="User:NAME, or User:* for everyone")
    parser.add_argument("--host", default="*", help="client address (default *: any)")
    resource = parser.add_mutually_exclusive_group(required=True)
    resource.add_argument("--topic", help="a topic name (* for every topic)")
    resource.add_argument("--group", help="a consumer group id")
    resource.add_argument("--transactional-id", help="a producer's transactional id")
    resource.add_argument("--cluster", action="store_true", help="the cluster itself")
    parser.add_argument(
        "--prefixed", action="store_true", help="the name is a prefix of the names meant"
    )
    parser.add_argument(
        "--operation", action="append", required=True, type=str.upper, choices=OPERATIONS,
        metavar="OPERATION", help=f"repeatable: {', '.join(OPERATIONS)}",
    )  # fmt: skip
    parser.add_argument("--deny", action="store_true", help="deny instead of allow")


def _rules(args: argparse.Namespace) -> list[Acl]:
    if not args.principal.startswith("User:"):
        raise ValueError(f"principals look like User:NAME, got {args.principal!r}")
    kinds = (
        (ResourceType.TOPIC, args.topic),
        (ResourceType.GROUP, args.group),
        (ResourceType.TRANSACTIONAL_ID, args.transactional_id),
        (ResourceType.CLUSTER, CLUSTER_NAME if args.cluster else None),
    )
    resource_type, name = next((kind, name) for kind, name in kinds if name)
    pattern = PatternType.PREFIXED if args.prefixed else PatternType.LITERAL
    permission = Permission.DENY if args.deny else Permission.ALLOW
    return [
        Acl(resource_type, name, pattern, args.principal, args.host, Operation[op], permission)
        for op in dict.fromkeys(args.operation)
    ]


def _add(store: AclStore, args: argparse.Namespace) -> int:
    rules = _rules(args)
    store.add(rules)
    return _show(args, rules, "added")


def _remove(store: AclStore, args: argparse.Namespace) -> int:
    removed = [
        acl
        for rule in _rules(args)
        for acl in store.remove(
            AclFilter(rule.resource_type, rule.resource_name, rule.pattern_type,
                      rule.principal, rule.host, rule.operation, rule.permission)
        )
    ]  # fmt: skip
    if not removed:
        raise ValueError("no such ACL")
    return _show(args, removed, "removed")


def _list(store: AclStore, args: argparse.Namespace) -> int:
    return _show(args, [a for a in store.all() if args.principal in (None, a.principal)], None)


def _show(args: argparse.Namespace, acls: list[Acl], verb: str | None) -> int:
    if args.json:
        print(json.dumps([a.to_json() for a in acls]))
        return 0
    rows = [
        (a.principal, a.host, a.permission.name, a.operation.name, a.resource_type.name,
         a.resource_name + ("*" if a.pattern_type is PatternType.PREFIXED else ""))
        for a in acls
    ]  # fmt: skip
    title = f"{len(acls)} ACL(s) {verb}" if verb else None
    print_tables(
        table(title, ("principal", "host", "permission", "operation", "type", "resource"), rows)
    )
    return 0
