"""The named faults a verify run can inject, and where in the run each one strikes.

Process faults kill real OS processes with SIGKILL; network faults go through the
``KafkaProxy`` in front of the broker, so they work against any Kafka.

A fault acts at one of three stages:

- ``produce``: while the orders are produced (a producer crash, a lost acknowledgement);
- ``crash``: a pipeline worker is started to die at a runtime crash point, then the
  next one takes over from what was committed;
- ``live``: while the last worker is mid-stream (broker kill -9, network cut, lost
  acknowledgement of the worker's own writes);
- ``zombie``: the last worker stops itself (SIGSTOP) at a commit point, stays silent
  past its session timeout while a second worker takes its partitions and processes,
  then is resumed (SIGCONT) and tries to finish what it started.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from onceflow.guarantees import Guarantee
from onceflow.processing.crashpoints import (
    AFTER_COMMIT,
    BEFORE_COMMIT,
    BEFORE_OFFSETS,
    RECORD_PROCESSED,
)
from onceflow.testing import BrokerProcess
from onceflow.verify.proxy import PRODUCE, KafkaProxy

BROKER_DOWN_SECONDS = 1.0
CUT_SECONDS = 2.0
LOST_RESPONSES = 2


@dataclass
class FaultContext:
    """What a fault can act on."""

    proxy: KafkaProxy
    broker: BrokerProcess | None


@dataclass(frozen=True)
class Fault:
    """One named fault."""

    name: str
    description: str
    stage: str  # produce, crash, live or zombie
    embedded_only: bool = False
    crash_at: dict[Guarantee, str] = field(default_factory=dict)
    inject: Callable[[FaultContext], str] | None = None


def _lose_produce_responses(ctx: FaultContext) -> str:
    ctx.proxy.lose_responses(PRODUCE, count=LOST_RESPONSES, skip=2)
    return f"armed: the next {LOST_RESPONSES} Produce responses (after 2) are lost"


def _kill_broker(ctx: FaultContext) -> str:
    assert ctx.broker is not None, "broker-kill needs the embedded broker"
    pid = ctx.broker.pid
    ctx.broker.kill()
    time.sleep(BROKER_DOWN_SECONDS)  # the fault is the outage itself
    ctx.broker.start()
    return f"broker pid {pid} killed with SIGKILL, restarted after {BROKER_DOWN_SECONDS:.0f}s"


def _cut_network(ctx: FaultContext) -> str:
    ctx.proxy.cut(CUT_SECONDS)
    time.sleep(CUT_SECONDS)  # the fault is the outage itself
    return f"every client connection cut for {CUT_SECONDS:.0f}s, then healed"


def zombie_pause_point(guarantee: Guarantee, eos_sink: bool) -> str:
    """Where the zombie stops: with its work done but its positions not yet committed,
    and holding no database lock (the successor shares the SQLite database). Under
    Kafka transactions that is before the positions join the open transaction (outputs
    produced, uncommitted); the database-transaction policy never reaches that point."""
    point = FAULTS["zombie"].crash_at[guarantee]
    if eos_sink and point.startswith(BEFORE_OFFSETS):
        return point.replace(BEFORE_OFFSETS, BEFORE_COMMIT, 1)
    return point


def _crash_points(at_most_once: str, others: str) -> dict[Guarantee, str]:
    return {
        Guarantee.AT_MOST_ONCE: at_most_once,
        Guarantee.AT_LEAST_ONCE: others,
        Guarantee.EXACTLY_ONCE: others,
    }


FAULTS: dict[str, Fault] = {
    fault.name: fault
    for fault in (
        Fault(
            "producer-crash",
            "order producer killed with records queued or in flight, before the broker "
            "appends them",
            "produce",
        ),
        Fault(
            "lost-produce-response",
            "broker appended, acknowledgement lost; the client retries on a new connection",
            "produce",
            inject=_lose_produce_responses,
        ),
        Fault(
            "crash-before-commit",
            "worker killed after processing, before the offset commit",
            "crash",
            # At most once commits before processing: its "before the next commit".
            crash_at=_crash_points(f"{RECORD_PROCESSED}:50", f"{BEFORE_COMMIT}:2"),
        ),
        Fault(
            "crash-after-commit",
            "worker killed after the offset commit, before processing the batch",
            "crash",
            crash_at=_crash_points(f"{AFTER_COMMIT}:2", f"{AFTER_COMMIT}:2"),
        ),
        Fault(
            "crash-mid-transaction",
            "worker killed after producing outputs, before the commit",
            "crash",
            # The outputs are appended before the kill: the open transaction is in the log.
            crash_at=_crash_points(f"{RECORD_PROCESSED}:60+flush", f"{RECORD_PROCESSED}:60+flush"),
        ),
        Fault(
            "broker-kill",
            "broker killed with SIGKILL mid-stream, restarted on the same data",
            "live",
            embedded_only=True,
            inject=_kill_broker,
        ),
        Fault(
            "zombie",
            "worker paused (SIGSTOP) past its session timeout with work uncommitted, "
            "resumed (SIGCONT) after another worker took its partitions and processed",
            "zombie",
            # At most once: right after committing a batch it has not processed yet.
            crash_at={
                Guarantee.AT_MOST_ONCE: f"{AFTER_COMMIT}:2",
                Guarantee.AT_LEAST_ONCE: f"{BEFORE_COMMIT}:2",
                Guarantee.EXACTLY_ONCE: f"{BEFORE_OFFSETS}:2",
            },
        ),
        Fault(
            "network-cut",
            f"all client connections cut for {CUT_SECONDS:.0f}s mid-stream, then healed",
            "live",
            inject=_cut_network,
        ),
    )
}

# The failure points of ``make demo``'s matrix.
SHOWCASE_FAULTS = (
    "producer-crash",
    "lost-produce-response",
    "crash-before-commit",
    "crash-after-commit",
    "crash-mid-transaction",
    "broker-kill",
)


def parse(names: list[str], *, embedded: bool) -> list[Fault]:
    """The faults named ``names`` (in the order the run applies them)."""
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault {unknown[0]!r}; choose from {', '.join(FAULTS)}")
    chosen = [FAULTS[n] for n in FAULTS if n in names]
    if not embedded:
        refused = [f.name for f in chosen if f.embedded_only]
        if refused:
            raise ValueError(f"{refused[0]} needs the embedded broker (drop --bootstrap)")
    return chosen
