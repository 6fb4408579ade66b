"""Faults that SIGKILL or SIGSTOP the workload's own processes (any target)."""

from __future__ import annotations

from onceflow.guarantees import Guarantee
from onceflow.processing.crashpoints import (
    AFTER_COMMIT,
    BEFORE_COMMIT,
    BEFORE_OFFSETS,
    RECORD_PROCESSED,
)
from onceflow.verify.faults.registry import Fault, register


def _crash_points(at_most_once: str, others: str) -> dict[Guarantee, str]:
    return {
        Guarantee.AT_MOST_ONCE: at_most_once,
        Guarantee.AT_LEAST_ONCE: others,
        Guarantee.EXACTLY_ONCE: others,
    }


register(
    Fault(
        "producer-crash",
        "order producer killed with records queued or in flight, before the broker appends them",
        "produce",
    )
)
register(
    Fault(
        "crash-before-commit",
        "worker killed after processing, before the offset commit",
        "crash",
        # At most once commits before processing: its "before the next commit".
        crash_at=_crash_points(f"{RECORD_PROCESSED}:50", f"{BEFORE_COMMIT}:2"),
    )
)
register(
    Fault(
        "crash-after-commit",
        "worker killed after the offset commit, before processing the batch",
        "crash",
        crash_at=_crash_points(f"{AFTER_COMMIT}:2", f"{AFTER_COMMIT}:2"),
    )
)
register(
    Fault(
        "crash-mid-transaction",
        "worker killed after producing outputs, before the commit",
        "crash",
        # The outputs are appended before the kill: the open transaction is in the log.
        crash_at=_crash_points(f"{RECORD_PROCESSED}:60+flush", f"{RECORD_PROCESSED}:60+flush"),
    )
)
ZOMBIE = register(
    Fault(
        "zombie",
        "worker paused (SIGSTOP) with work uncommitted while a restart of the same "
        "instance takes its identity and partitions, resumed (SIGCONT) after that "
        "successor processed",
        "zombie",
        # At most once: right after committing a batch it has not processed yet.
        crash_at={
            Guarantee.AT_MOST_ONCE: f"{AFTER_COMMIT}:2",
            Guarantee.AT_LEAST_ONCE: f"{BEFORE_COMMIT}:2",
            Guarantee.EXACTLY_ONCE: f"{BEFORE_OFFSETS}:2",
        },
    )
)


def zombie_pause_point(guarantee: Guarantee, eos_sink: bool) -> str:
    """Where the zombie stops: with its work done but its positions not yet committed,
    and holding no database lock (the successor shares the SQLite database). Under
    Kafka transactions that is before the positions join the open transaction (outputs
    produced, uncommitted); the database-transaction policy never reaches that point."""
    point = ZOMBIE.crash_at[guarantee]
    if eos_sink and point.startswith(BEFORE_OFFSETS):
        return point.replace(BEFORE_OFFSETS, BEFORE_COMMIT, 1)
    return point
