"""The three verdicts of a verify run and the exit status they make."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Outcome(StrEnum):
    """pass: the guarantee held under faults that landed; fail: the history shows a
    violation; inconclusive: no violation, but the run cannot vouch for the guarantee
    (a fault did not land, the workload did not finish, a process died of something
    other than the injected fault)."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"

    @property
    def exit_code(self) -> int:
        return {Outcome.PASS: 0, Outcome.FAIL: 1, Outcome.INCONCLUSIVE: 2}[self]


def outcome_of(violated: bool, inconclusive: Iterable[str]) -> Outcome:
    """A violation is a failure whatever else happened (the history shows it); else any
    reason to doubt the run makes it inconclusive, never a pass."""
    if violated:
        return Outcome.FAIL
    return Outcome.INCONCLUSIVE if any(True for _ in inconclusive) else Outcome.PASS


def exit_code(outcomes: Iterable[Outcome]) -> int:
    """1 if any run failed, else 2 if any was inconclusive, else 0."""
    found = set(outcomes)
    for worst in (Outcome.FAIL, Outcome.INCONCLUSIVE):
        if worst in found:
            return worst.exit_code
    return 0
