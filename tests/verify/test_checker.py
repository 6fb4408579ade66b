"""The checker on hand-built histories: a clean one, then one per anomaly class.

Each anomalous history is the clean one with a single thing broken, so each test also
shows that the checker blames that thing and nothing else.
"""

from __future__ import annotations

from typing import Any

import pytest

from onceflow.guarantees import Guarantee
from onceflow.verify import checker
from onceflow.verify.checker import check, verdict
from onceflow.verify.history import Event

IN, OUT, GROUP = "orders", "payments", "charger"
ORDERS = {"o1": ["c1", 10], "o2": ["c1", 20], "o3": ["c2", 5]}


class History:
    """A small builder of histories with increasing timestamps."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, type_: str, proc: str = "w", pid: int = 1, **fields: Any) -> Event:
        event = {"t": float(len(self.events)), "pid": pid, "proc": proc, "type": type_, **fields}
        self.events.append(event)
        return event


def clean() -> History:
    """Three orders produced, charged once each inside one committed transaction."""
    h = History()
    h.add("intent", "orchestrator", input_topic=IN, output_topic=OUT, orders=ORDERS)
    for offset, order in enumerate(ORDERS):
        h.add("send", "producer", topic=IN, id=f"in-{order}", value_id=order, key="k", txn=None)
        h.add("ack", "producer", id=f"in-{order}", topic=IN, partition=0, offset=offset)
    h.add("txn_init", tid="tid", instance="w-1")
    h.add("txn_begin", tid="tid", instance="w-1", txn="t1")
    h.add("assign", partitions=[[IN, 0]])
    for offset, order in enumerate(ORDERS):
        h.add("poll", isolation="read_committed", topic=IN, partition=0, offset=offset,
              id=f"in-{order}", value_id=order, key="k")  # fmt: skip
        h.add("send", topic=OUT, id=f"out-{order}", value_id=order, key="k", txn="t1")
        h.add("ack", id=f"out-{order}", topic=OUT, partition=0, offset=offset)
        h.add("sink_write", key=order, inserted=True)
    h.add("sink_commit", keys=list(ORDERS), group=GROUP, offsets=[])
    h.add("txn_offsets", txn="t1", group=GROUP, offsets=[[IN, 0, 3]])
    h.add("txn_commit_start", txn="t1")
    h.add("txn_commit", txn="t1")
    h.add("poll", "tail", 2, isolation="read_committed", topic=OUT, partition=0, offset=0,
          id="out-o1", value_id="o1", key="k")  # fmt: skip
    final(h, IN, [[0, i, f"in-{o}", o, "k"] for i, o in enumerate(ORDERS)])
    final(h, OUT, [[0, i, f"out-{o}", o, "k"] for i, o in enumerate(ORDERS)])
    h.add("db_state", "orchestrator", ledger={o: a for o, (_, a) in ORDERS.items()},
          balances={"c1": 30, "c2": 5})  # fmt: skip
    return h


def final(h: History, topic: str, rows: list[list[Any]], *, uncommitted: list[Any] | None = None):
    h.add("final_read", "orchestrator", isolation="read_committed", topic=topic, records=rows)
    h.add("final_read", "orchestrator", isolation="read_uncommitted", topic=topic,
          records=rows if uncommitted is None else uncommitted)  # fmt: skip


def replace_final(h: History, topic: str, isolation: str, rows: list[list[Any]]) -> None:
    for event in h.events:
        if event["type"] == "final_read" and (event["topic"], event["isolation"]) == (
            topic,
            isolation,
        ):
            event["records"] = rows


def kinds(h: History) -> dict[str, int]:
    return {k: n for k, n in check(h.events).counts().items() if n}


def test_clean_history_has_no_anomalies_and_passes_every_guarantee() -> None:
    findings = check(clean().events)
    assert findings.anomalies == []
    assert findings.orders == 3 and findings.balances_correct is True
    for guarantee in Guarantee:
        assert verdict(guarantee, findings).ok


def test_acknowledged_write_missing_from_the_log() -> None:
    h = clean()
    replace_final(
        h, IN, "read_uncommitted", [[0, 0, "in-o1", "o1", "k"], [0, 2, "in-o3", "o3", "k"]]
    )
    assert kinds(h) == {checker.LOST_ACKED: 1}


def test_order_never_delivered_is_lost() -> None:
    h = clean()
    replace_final(
        h, OUT, "read_committed", [[0, 0, "out-o1", "o1", "k"], [0, 1, "out-o2", "o2", "k"]]
    )
    findings = check(h.events)
    assert findings.lost == {"o3"} and kinds(h) == {checker.LOST: 1}
    assert verdict(Guarantee.AT_MOST_ONCE, findings).ok
    assert not verdict(Guarantee.AT_LEAST_ONCE, findings).ok
    assert not verdict(Guarantee.EXACTLY_ONCE, findings).ok


def test_one_value_at_two_offsets_is_a_duplicate() -> None:
    h = clean()
    rows = [[0, i, f"out-{o}", o, "k"] for i, o in enumerate(ORDERS)]
    rows.append([0, 3, "out-o2-again", "o2", "k"])
    h.add("send", topic=OUT, id="out-o2-again", value_id="o2", key="k", txn=None)
    replace_final(h, OUT, "read_committed", rows)
    findings = check(h.events)
    assert findings.duplicated == {"o2"} and kinds(h) == {checker.DUPLICATE: 1}
    assert not verdict(Guarantee.AT_MOST_ONCE, findings).ok
    assert verdict(Guarantee.AT_LEAST_ONCE, findings).ok
    assert not verdict(Guarantee.EXACTLY_ONCE, findings).ok


def test_row_applied_in_two_committed_database_transactions() -> None:
    h = clean()
    h.add("sink_write", key="o1", inserted=True)
    h.add("sink_commit", keys=["o1"], group=GROUP, offsets=[])
    assert kinds(h) == {checker.DUPLICATE_APPLICATION: 1}
    assert not verdict(Guarantee.AT_LEAST_ONCE, check(h.events)).ok


def test_balance_that_is_not_the_sum_of_its_charges() -> None:
    h = clean()
    h.events[-1]["balances"] = {"c1": 40, "c2": 5}  # o1 applied twice
    findings = check(h.events)
    assert findings.balances_correct is False and kinds(h) == {checker.WRONG_BALANCE: 1}


def test_read_committed_consumer_saw_an_aborted_transaction() -> None:
    h = clean()
    h.add("txn_begin", tid="tid", instance="w-1", txn="t2")
    h.add("send", topic=OUT, id="out-o1-redo", value_id="o9", key="k", txn="t2")
    h.add("txn_abort", txn="t2")
    h.add("poll", "tail", 2, isolation="read_committed", topic=OUT, partition=0, offset=5,
          id="out-o1-redo", value_id="o9", key="k")  # fmt: skip
    assert kinds(h) == {checker.ABORTED_READ: 1}
    for guarantee in Guarantee:
        assert not verdict(guarantee, check(h.events)).ok


def test_transaction_left_open_by_a_dead_process_counts_as_aborted() -> None:
    h = clean()
    h.add("txn_begin", tid="tid", instance="w-1", txn="t2")
    h.add("send", topic=OUT, id="out-zombie", value_id="o9", key="k", txn="t2")
    h.add("fault", name="crash", detail="record_processed:1")
    rows = [[0, i, f"out-{o}", o, "k"] for i, o in enumerate(ORDERS)] + [
        [0, 9, "out-zombie", "o9", "k"]
    ]
    replace_final(h, OUT, "read_committed", rows)
    assert kinds(h) == {checker.ABORTED_READ: 1}


def test_record_visible_before_its_transaction_committed() -> None:
    h = clean()
    tail = next(e for e in h.events if e["proc"] == "tail")
    tail["t"] = 1.0  # long before the commit started
    assert kinds(h) == {checker.UNCOMMITTED_READ: 1}


def test_offsets_going_backwards_within_one_assignment() -> None:
    h = clean()
    h.add("poll", isolation="read_committed", topic=IN, partition=0, offset=1,
          id="in-o2", value_id="o2", key="k")  # fmt: skip
    assert kinds(h) == {checker.NON_MONOTONIC: 1}


def test_a_seek_or_a_new_assignment_allows_going_back() -> None:
    h = clean()
    h.add("seek", topic=IN, partition=0, offset=1)
    h.add("poll", isolation="read_committed", topic=IN, partition=0, offset=1,
          id="in-o2", value_id="o2", key="k")  # fmt: skip
    assert kinds(h) == {}


def test_committed_offset_regression() -> None:
    h = clean()
    h.add("commit", group=GROUP, offsets=[[IN, 0, 1]])
    assert kinds(h) == {checker.OFFSET_REGRESSION: 1}


def test_aborted_transaction_offsets_are_not_commits() -> None:
    h = clean()
    h.add("txn_begin", tid="tid", instance="w-1", txn="t2")
    h.add("txn_offsets", txn="t2", group=GROUP, offsets=[[IN, 0, 1]])
    h.add("txn_abort", txn="t2")
    assert kinds(h) == {}


def test_commit_from_a_fenced_producer() -> None:
    h = clean()
    h.add("txn_begin", tid="tid", instance="w-1", txn="t2")
    h.add("txn_init", "w2", 2, tid="tid", instance="w2-1")  # a newer incarnation took over
    h.add("txn_commit_start", txn="t2")
    h.add("txn_commit", txn="t2")  # ...and the old one still committed
    assert kinds(h) == {checker.FENCED_WRITE: 1}


def test_a_producers_writes_of_one_key_out_of_order() -> None:
    h = clean()
    for event in h.events:
        if event["type"] == "ack" and event["id"] in ("in-o1", "in-o2"):
            event["offset"] = 1 - event["offset"]
    assert checker.ORDER_VIOLATION in kinds(h)


def test_output_not_in_the_input_order_of_its_key() -> None:
    h = clean()
    rows = [[0, 0, "out-o2", "o2", "k"], [0, 1, "out-o1", "o1", "k"], [0, 2, "out-o3", "o3", "k"]]
    replace_final(h, OUT, "read_committed", rows)
    assert kinds(h) == {checker.OUT_OF_ORDER: 1}
    # Only at most once, which fences no zombie, lets it pass.
    findings = check(h.events)
    assert [g for g in Guarantee if verdict(g, findings).ok] == [Guarantee.AT_MOST_ONCE]


@pytest.mark.parametrize("kind", sorted(checker.SAFETY))
def test_safety_anomalies_fail_every_guarantee(kind: str) -> None:
    findings = checker.Findings(anomalies=[checker.Anomaly(kind, "x", "y")])
    assert not any(verdict(g, findings).ok for g in Guarantee)


def _zombie_writes_visible(h: History, *, taken_over: bool) -> History:
    h.add("txn_begin", tid="tid", instance="w-1", txn="t2")
    h.add("send", topic=OUT, id="out-zombie", value_id="o9", key="k", txn="t2")
    if taken_over:
        h.add("txn_init", "w2", 2, tid="tid", instance="w2-1")
    h.add("txn_commit_start", txn="t2")  # the commit's outcome is never recorded
    rows = [[0, i, f"out-{o}", o, "k"] for i, o in enumerate(ORDERS)] + [
        [0, 9, "out-zombie", "o9", "k"]
    ]
    replace_final(h, OUT, "read_committed", rows)
    return h


def test_writes_of_a_fenced_producer_visible_although_its_commit_never_returned() -> None:
    assert kinds(_zombie_writes_visible(clean(), taken_over=True)) == {checker.FENCED_WRITE: 1}


def test_writes_of_a_commit_whose_outcome_is_unknown_may_be_visible() -> None:
    assert kinds(_zombie_writes_visible(clean(), taken_over=False)) == {}
