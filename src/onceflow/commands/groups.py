"""``onceflow groups list|describe``."""

from __future__ import annotations

import argparse

from onceflow.admin.cluster import Cluster
from onceflow.commands.common import add_action, add_family, print_json, print_tables, table

PROG = "onceflow groups"


def register(commands: argparse._SubParsersAction) -> None:
    actions = add_family(
        commands,
        "groups",
        "list consumer groups, or show one's members, offsets and lag",
        "Consumer groups of any Kafka-compatible cluster: state, members with "
        "their assignment, and per partition the committed offset, end offset and lag.",
    )
    add_action(actions, "list", "list consumer groups and their states", _list, prog=PROG)
    describe = add_action(
        actions,
        "describe",
        "show a group's members and, per partition, committed offset, end offset and lag",
        _describe,
        prog=PROG,
    )
    describe.add_argument("group")


def _list(cluster: Cluster, args: argparse.Namespace) -> int:
    groups = cluster.list_groups()
    if args.json:
        print_json(groups)
        return 0
    if not groups:
        print("no consumer groups")
        return 0
    print_tables(
        table(None, ["group", "state", "type"], [[g.group, g.state, g.kind] for g in groups])
    )
    return 0


def _describe(cluster: Cluster, args: argparse.Namespace) -> int:
    detail = cluster.describe_group(args.group)
    if args.json:
        print_json(detail)
        return 0
    client_of = {m.member_id: m.client_id for m in detail.members}
    summary = (
        f"group {detail.group}: {detail.state}, assignor {detail.assignor or '-'}, "
        f"coordinator {detail.coordinator}, {len(detail.members)} member(s)"
    )
    members = table(
        "members",
        ["client id", "host", "assignment"],
        [
            [
                m.client_id,
                m.host,
                ", ".join(f"{t}-{p}" for t, p in m.assignment) or "-",
            ]
            for m in detail.members
        ],
    )
    offsets = table(
        "offsets",
        ["topic", "partition", "committed", "end", "lag", "consumer"],
        [
            [o.topic, o.partition, o.committed, o.end, o.lag, client_of.get(o.member_id or "")]
            for o in detail.offsets
        ],
    )
    print_tables(summary, members if detail.members else "no members", offsets)
    return 0
