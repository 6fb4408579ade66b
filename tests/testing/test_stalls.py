"""The stall measure of the copier liveness run, on event timelines written out here.

The events are what ``onceflow.testing.copier`` reports; the times are chosen so each
case has one known answer.
"""

from __future__ import annotations

from typing import Any

import pytest

from onceflow.testing.stalls import EVERYONE, longest_stall

ENDS = {0: 100, 1: 100}


def ev(t: float, copier: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"t": t, "copier": copier, "ev": kind, **fields}


def steady(copier: str, partition: int, start: float, stop: float) -> list[dict[str, Any]]:
    """One reception of ``partition`` a second from ``start`` to ``stop``."""
    return [
        ev(start + i, copier, "got", parts={str(partition): 10})
        for i in range(int(stop - start) + 1)
    ]


def run(*parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((e for part in parts for e in part), key=lambda e: e["t"])


def test_copiers_receiving_until_done_never_stall() -> None:
    events = run(
        [ev(0, "a1", "started"), ev(0, "a1", "assign", parts=[0])],
        [ev(0, "b1", "started"), ev(0, "b1", "assign", parts=[1])],
        steady("a1", 0, 1, 10),
        steady("b1", 1, 1, 10),
        [ev(10.5, "a1", "committed", offsets={"0": 100}, n=10)],
        [ev(10.5, "b1", "committed", offsets={"1": 100}, n=10)],
    )
    stall = longest_stall(events, ENDS, started=0, finished=11)
    assert stall.seconds == pytest.approx(1.0)


def test_both_copiers_silent_with_input_left_is_a_stall_of_everyone() -> None:
    events = run(
        [ev(0, "a1", "started"), ev(0, "a1", "assign", parts=[0])],
        [ev(0, "b1", "started"), ev(0, "b1", "assign", parts=[1])],
        steady("a1", 0, 1, 5),
        steady("b1", 1, 1, 5),
    )
    stall = longest_stall(events, ENDS, started=0, finished=30)
    assert (stall.seconds, stall.since) == pytest.approx((25.0, 5.0))
    # Each copier stalled as long, but everyone is reported when all were silent.
    assert stall.who == EVERYONE


def test_one_copier_silent_while_it_owns_uncopied_input_is_its_stall() -> None:
    events = run(
        [ev(0, "a1", "started"), ev(0, "a1", "assign", parts=[0])],
        [ev(0, "b1", "started"), ev(0, "b1", "assign", parts=[1])],
        steady("a1", 0, 1, 20),
        steady("b1", 1, 1, 4),
        steady("b1", 1, 12, 20),
        [ev(20.5, "a1", "committed", offsets={"0": 100}, n=10)],
        [ev(20.5, "b1", "committed", offsets={"1": 100}, n=10)],
    )
    stall = longest_stall(events, ENDS, started=0, finished=21)
    assert (stall.who, stall.seconds, stall.since) == ("b1", 8.0, 4.0)


def test_a_copier_whose_partitions_are_done_is_idle_not_stalled() -> None:
    events = run(
        [ev(0, "a1", "started"), ev(0, "a1", "assign", parts=[0])],
        [ev(0, "b1", "started"), ev(0, "b1", "assign", parts=[1])],
        steady("a1", 0, 1, 20),
        steady("b1", 1, 1, 3),
        [ev(3.5, "b1", "committed", offsets={"1": 100}, n=10)],
        [ev(20.5, "a1", "committed", offsets={"0": 100}, n=10)],
    )
    assert longest_stall(events, ENDS, started=0, finished=21).seconds == pytest.approx(1.0)


def test_partitions_of_a_killed_copier_wait_for_their_next_owner() -> None:
    events = run(
        [ev(0, "a1", "started"), ev(0, "a1", "assign", parts=[0, 1])],
        steady("a1", 0, 1, 3),
        [ev(3.2, "a1", "exit", rc=-9)],
        [ev(4, "a2", "started"), ev(10, "a2", "assign", parts=[0, 1])],
        steady("a2", 0, 11, 15),
        [ev(15.5, "a2", "committed", offsets={"0": 100, "1": 100}, n=10)],
    )
    stall = longest_stall(events, ENDS, started=0, finished=16)
    # Nobody received from 3 s (a1's last) to 11 s (a2's first): everyone stalled.
    assert (stall.who, stall.seconds, stall.since) == (EVERYONE, 8.0, 3.0)
