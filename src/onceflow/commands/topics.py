"""``onceflow topics list|describe|create|delete|config``."""

from __future__ import annotations

import argparse

from onceflow.admin.cluster import Cluster
from onceflow.commands.common import (
    add_action,
    add_family,
    human_bytes,
    key_values,
    print_json,
    print_tables,
    table,
)

PROG = "onceflow topics"


def register(commands: argparse._SubParsersAction) -> None:
    actions = add_family(
        commands,
        "topics",
        "list, describe, create, delete topics and change their configs",
        "Topics of any Kafka-compatible cluster: partitions, leaders, high "
        "watermark, last stable offset, log start, size on disk and configs.",
    )

    add_action(actions, "list", "list topics with their partition counts", _list, prog=PROG)

    describe = add_action(
        actions,
        "describe",
        "show a topic's partitions (leader, log start, HW, LSO, size) and its configs",
        _describe,
        prog=PROG,
    )
    describe.add_argument("topic")

    create = add_action(actions, "create", "create a topic", _create, prog=PROG)
    create.add_argument("topic")
    create.add_argument("--partitions", type=int, default=1, help="partition count (default 1)")
    create.add_argument(
        "--replication-factor", type=int, default=-1, help="replicas (default: the broker's)"
    )
    create.add_argument(
        "--config", action="append", default=[], metavar="KEY=VALUE", help="a topic config"
    )

    delete = add_action(actions, "delete", "delete a topic and its data", _delete, prog=PROG)
    delete.add_argument("topic")

    config = add_action(
        actions,
        "config",
        "show every config of a topic, or change some with --set/--delete",
        _config,
        prog=PROG,
    )
    config.add_argument("topic")
    config.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="set a config"
    )
    config.add_argument(
        "--delete", action="append", default=[], metavar="KEY", help="revert a config to default"
    )


def _list(cluster: Cluster, args: argparse.Namespace) -> int:
    topics = cluster.list_topics()
    if args.json:
        print_json(topics)
        return 0
    print_tables(
        table(
            None,
            ["topic", "partitions", "replicas"],
            [[t.name, t.partitions, t.replication_factor] for t in topics],
        )
    )
    return 0


def _describe(cluster: Cluster, args: argparse.Namespace) -> int:
    detail = cluster.describe_topic(args.topic)
    if args.json:
        print_json(detail)
        return 0
    partitions = table(
        f"topic {detail.name}",
        ["partition", "leader", "replicas", "log start", "HW", "LSO", "size"],
        [
            [
                p.partition,
                p.leader,
                ",".join(map(str, p.replicas)),
                p.log_start,
                p.high_watermark,
                p.last_stable,
                human_bytes(p.size),
            ]
            for p in detail.partitions
        ],
    )
    configs = (
        table("configs set on the topic", ["config", "value"], sorted(detail.configs.items()))
        if detail.configs
        else "no configs set on the topic (all defaults)"
    )
    print_tables(partitions, configs)
    return 0


def _create(cluster: Cluster, args: argparse.Namespace) -> int:
    configs = key_values(args.config, "--config")
    cluster.create_topic(args.topic, args.partitions, args.replication_factor, configs)
    if args.json:
        print_json({"created": args.topic, "partitions": args.partitions, "configs": configs})
    else:
        print(f"created topic {args.topic} with {args.partitions} partition(s)")
    return 0


def _delete(cluster: Cluster, args: argparse.Namespace) -> int:
    cluster.delete_topic(args.topic)
    if args.json:
        print_json({"deleted": args.topic})
    else:
        print(f"deleted topic {args.topic}")
    return 0


def _config(cluster: Cluster, args: argparse.Namespace) -> int:
    changes = key_values(args.set, "--set")
    if changes or args.delete:
        cluster.alter_topic_configs(args.topic, changes, args.delete)
    configs = cluster.topic_configs(args.topic)
    if args.json:
        print_json(configs)
        return 0
    print_tables(
        table(
            f"configs of {args.topic}",
            ["config", "value", "source"],
            [
                [c.name, "(sensitive)" if c.is_sensitive else c.value, c.source.lower()]
                for c in configs
            ],
        )
    )
    return 0
