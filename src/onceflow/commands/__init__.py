"""Operator subcommands of ``onceflow`` (topics, groups, transactions), one module each,
for any Kafka-compatible cluster; and ``replication``, measured on Apache Kafka."""

from __future__ import annotations

import argparse

from onceflow.commands import groups, replication, topics, transactions


def register(commands: argparse._SubParsersAction) -> None:
    """Add every operator command family to the ``onceflow`` parser."""
    for family in (topics, groups, transactions, replication):
        family.register(commands)
