"""What one ``Runner.run`` did."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunStats:
    """Counters of one ``Runner.run``."""

    processed: int = 0
    dead_lettered: int = 0
    commits: int = 0
    aborts: int = 0
    producer_rebuilds: int = 0
    #: Times the consumer was closed and a new one joined the group after a fatal error.
    rejoins: int = 0
    #: Partitions handed back in a rebalance (revoked or lost).
    revoked: int = 0
    lost: int = 0
    #: Commits an exactly-once sink refused because another runner owns the partitions.
    fenced: int = 0
    #: Names of the Kafka errors that made the runner retry, abort or rebuild, in order.
    errors: list[str] = field(default_factory=list)
