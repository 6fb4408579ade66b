"""The checker never crashes: generated, mutated and malformed histories all come back
as findings, and whatever it cannot interpret is an ``unexplained-record`` finding.

Property tests (hypothesis) on three kinds of history: well-formed events drawn from
small pools (so ids, transactions and offsets collide the way a misbehaving broker makes
them collide), the clean hand-built history of ``test_checker`` mutated (events dropped,
reordered, duplicated, fields nulled or replaced), and arbitrary JSON.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onceflow.guarantees import Guarantee
from onceflow.verify import checker
from onceflow.verify.checker import check, verdict
from onceflow.verify.schema import FIELDS, problem

from .test_checker import IN, OUT, clean

# 2400 cases per run in all, a few seconds on an idle core.
PROPERTY = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])

topics = st.sampled_from([IN, OUT, "other"])
partitions = st.integers(0, 2)
offsets = st.integers(0, 6)
ids = st.sampled_from(["in-o1", "in-o2", "out-o1", "out-o2", "w9"])
value_ids = st.sampled_from(["o1", "o2", "o3", "o9"])
maybe = st.none().__or__
json_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-3, 10)
    | st.floats()
    | st.sampled_from(["", "t", "ack"])
)
json_value = st.recursive(
    json_scalar,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["t", "type", "pid", "proc", "id"]), inner, max_size=4)
    ),
    max_leaves=6,
)

FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "orders": st.dictionaries(
        value_ids, st.tuples(st.sampled_from(["c1", "c2"]), st.integers(0, 30)).map(list)
    ),
    "input_topic": maybe(topics),
    "output_topic": maybe(topics),
    "topic": topics,
    "id": ids,
    "value_id": maybe(value_ids),
    "key": maybe(st.sampled_from(["k", "c1"])),
    "txn": maybe(st.sampled_from(["t1", "t2"])),
    "partition": partitions,
    "offset": offsets,
    "tid": st.sampled_from(["tid", "tid2"]),
    "instance": st.sampled_from(["w-1", "w2-1"]),
    "group": maybe(st.just("charger")),
    "offsets": st.lists(st.tuples(topics, partitions, offsets).map(list), max_size=3),
    "partitions": st.lists(st.tuples(topics, partitions).map(list), max_size=3),
    "isolation": st.sampled_from([checker.READ_COMMITTED, checker.READ_UNCOMMITTED]),
    "key_list": st.lists(value_ids, max_size=3),
    "inserted": st.booleans(),
    "name": st.sampled_from(["crash", "pause"]),
    "detail": st.text(max_size=5),
    "records": st.lists(
        st.tuples(partitions, offsets, maybe(ids), maybe(value_ids), maybe(st.just("k"))).map(list),
        max_size=5,
    ),
    "ledger": st.dictionaries(value_ids, st.integers(0, 30), max_size=3),
    "balances": st.dictionaries(st.sampled_from(["c1", "c2"]), st.integers(0, 60), max_size=2),
}


@st.composite
def well_formed_event(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(FIELDS)))
    event: dict[str, Any] = {
        "t": draw(st.floats(0, 100, allow_nan=False)),
        "pid": draw(st.integers(1, 3)),
        "proc": draw(st.sampled_from(["w", "tail", "orchestrator"])),
        "type": kind,
    }
    for name in FIELDS[kind]:
        if (kind, name) == ("sink_commit", "keys"):
            strategy = FIELD_VALUES["key_list"]
        elif (kind, name) == ("ack", "offset"):
            strategy = maybe(offsets)  # delivery reports without an offset happen
        else:
            strategy = FIELD_VALUES[name]
        event[name] = draw(strategy)
    return event


def assert_interpreted(history: list[Any]) -> checker.Findings:
    """check() returned, no check broke, every guarantee has a verdict, and each
    malformed event is reported."""
    findings = check(history)
    broke = [a for a in findings.anomalies if a.subject == checker.CHECKER_ERROR]
    assert broke == [], broke
    for guarantee in Guarantee:
        verdict(guarantee, findings)
    malformed = sum(1 for event in history if problem(event) is not None)
    reported = sum(1 for a in findings.anomalies if a.subject.startswith("event "))
    assert reported == malformed
    if malformed:
        assert not any(verdict(g, findings).ok for g in Guarantee)
    return findings


@PROPERTY
@given(st.lists(well_formed_event(), max_size=20))
def test_generated_well_formed_histories_are_interpreted(history: list[dict[str, Any]]) -> None:
    history.sort(key=lambda event: event["t"])
    assert_interpreted(history)


@PROPERTY
@given(st.lists(well_formed_event(), max_size=20))
def test_generated_histories_out_of_time_order_are_interpreted(
    history: list[dict[str, Any]],
) -> None:
    assert_interpreted(history)


@st.composite
def mutated_clean_history(draw: st.DrawFn) -> list[Any]:
    events: list[Any] = [dict(e) for e in clean().events]
    for _ in range(draw(st.integers(1, 6))):
        if not events:
            break
        at = draw(st.integers(0, len(events) - 1))
        action = draw(st.sampled_from(["drop", "move", "copy", "null", "replace", "junk"]))
        if action == "drop":
            events.pop(at)
        elif action == "move":
            events.insert(draw(st.integers(0, len(events) - 1)), events.pop(at))
        elif action == "copy":
            events.insert(at, events[at])
        elif action == "junk":
            events.insert(at, draw(json_value))
        elif isinstance(events[at], dict) and events[at]:
            name = draw(st.sampled_from(sorted(events[at])))
            events[at][name] = None if action == "null" else draw(json_value)
    return events


@PROPERTY
@given(mutated_clean_history())
def test_mutated_clean_histories_are_interpreted(history: list[Any]) -> None:
    assert_interpreted(history)


@PROPERTY
@given(st.lists(json_value, max_size=10))
def test_arbitrary_json_is_unexplained_not_a_crash(history: list[Any]) -> None:
    assert_interpreted(history)


def test_acks_without_offsets_do_not_break_the_order_check() -> None:
    # The TypeError of issue 12: lost produce responses leave delivery reports whose
    # offset is None, and the order check compared them.
    h = clean()
    for event in h.events:
        if event["type"] == "ack" and event["topic"] == IN:
            event["offset"] = None
    findings = check(h.events)
    assert not [a for a in findings.anomalies if a.subject == checker.CHECKER_ERROR]
    assert findings.count(checker.ORDER_VIOLATION) == 0


def test_a_record_no_write_produced_is_unexplained() -> None:
    h = clean()
    for event in h.events:
        if event["type"] == "final_read" and event["topic"] == OUT:
            event["records"] = [*event["records"], [0, 3, "forged", "o1", "k"]]
    findings = check(h.events)
    unexplained = [a for a in findings.anomalies if a.kind == checker.UNEXPLAINED]
    assert [a.subject for a in unexplained] == [f"{OUT}[0]@3", f"{OUT}[0]@3"]
    assert not any(verdict(g, findings).ok for g in Guarantee)


def test_an_unknown_event_type_is_unexplained() -> None:
    h = clean()
    h.add("teleport", where="mars")
    findings = check(h.events)
    assert [a.detail for a in findings.anomalies] == ["unknown event type 'teleport'"]
