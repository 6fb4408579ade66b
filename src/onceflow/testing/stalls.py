"""Stalls in a copier run: how long input waited with nobody receiving it.

Computed from the copiers' events (see ``onceflow.testing.copier``): ``got`` marks a
reception, ``assign``/``revoke``/``lost`` change what a copier owns, ``committed``
tells when a partition was copied to its end. A copier is stalled while it owns a
partition that is not yet copied to its end and receives nothing; the copiers as a
whole are stalled while any partition is not yet copied and none of them receives
anything (both hung, or none owns the partitions left).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

#: ``Stall.who`` for the copiers taken together.
EVERYONE = "all copiers"


@dataclasses.dataclass
class Stall:
    """The longest stall of one run."""

    seconds: float = 0.0
    #: A copier's label (name and incarnation), or ``EVERYONE``.
    who: str = ""
    #: When it began, in seconds after the run's start.
    since: float = 0.0


def done_times(events: Iterable[dict[str, Any]], ends: dict[int, int]) -> dict[int, float]:
    """When each partition was first committed to its end (infinity if never)."""
    done = dict.fromkeys(ends, math.inf)
    for event in events:
        if event["ev"] == "committed":
            for partition, offset in event["offsets"].items():
                p = int(partition)
                if offset >= ends[p]:
                    done[p] = min(done[p], event["t"])
    return done


def longest_stall(events: list[dict[str, Any]], ends: dict[int, int],
                  started: float, finished: float) -> Stall:  # fmt: skip
    """The longest stall, of any copier or of all together, in [started, finished]."""
    done = done_times(events, ends)
    everyone = [e["t"] for e in events if e["ev"] == "got"]
    worst = _longest(everyone, [(started, frozenset(ends))], done, started, finished)
    worst = dataclasses.replace(worst, who=EVERYONE)
    for label in dict.fromkeys(e["copier"] for e in events):
        mine = [e for e in events if e["copier"] == label]
        begin = max(started, mine[0]["t"])
        end = min([finished] + [e["t"] for e in mine if e["ev"] == "exit"])
        receptions = [e["t"] for e in mine if e["ev"] == "got"]
        stall = _longest(receptions, _ownership(mine), done, begin, end)
        if stall.seconds > worst.seconds:
            worst = dataclasses.replace(stall, who=label)
    return dataclasses.replace(worst, since=worst.since - started)


def _ownership(events: list[dict[str, Any]]) -> list[tuple[float, frozenset[int]]]:
    """(time, partitions owned from then on), replaying assign/revoke/lost events."""
    owned: frozenset[int] = frozenset()
    changes = [(-math.inf, owned)]
    for event in events:
        if event["ev"] == "assign":
            owned = owned | set(event["parts"])
        elif event["ev"] in ("revoke", "lost"):
            owned = owned - set(event["parts"])
        else:
            continue
        changes.append((event["t"], owned))
    return changes


def _longest(receptions: list[float], ownership: list[tuple[float, frozenset[int]]],
             done: dict[int, float], begin: float, end: float) -> Stall:  # fmt: skip
    """Sweep the moments where something changes; a stall runs from the moment there
    was work and no reception until the next reception or the end of the work."""
    received = set(receptions)
    marks = sorted(
        {begin, end}
        | {t for t in received if begin < t < end}
        | {t for t, _ in ownership if begin < t < end}
        | {t for t in done.values() if begin < t < end}
    )
    worst = Stall()
    stall_from: float | None = None
    for mark in marks:
        if stall_from is not None and mark - stall_from > worst.seconds:
            worst = Stall(mark - stall_from, since=stall_from)
        owned = next(parts for t, parts in reversed(ownership) if t <= mark)
        has_work = any(done[p] > mark for p in owned)
        if not has_work:
            stall_from = None
        elif mark in received or stall_from is None:
            stall_from = mark
    return worst
