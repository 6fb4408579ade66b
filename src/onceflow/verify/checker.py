"""The checker: pure functions from a history (see ``history``) to anomalies and a verdict.

Nothing here talks to Kafka: a history recorded by a real run and one built by hand in
a test are checked alike.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from onceflow.guarantees import Guarantee
from onceflow.verify.history import Event
from onceflow.verify.schema import problem

# Anomaly kinds.
LOST_ACKED = "lost-acked-write"
LOST = "lost"
DUPLICATE = "duplicate"
DUPLICATE_APPLICATION = "duplicate-application"
WRONG_BALANCE = "wrong-balance"
ABORTED_READ = "aborted-read"
UNCOMMITTED_READ = "visible-before-commit"
NON_MONOTONIC = "non-monotonic-offsets"
OFFSET_REGRESSION = "committed-offset-regression"
FENCED_WRITE = "fenced-write-visible"
ORDER_VIOLATION = "order-violation"
# The pipeline's outputs of one key not in the order of their inputs. Only exactly once
# fences a zombie (a paused runner that was replaced, then resumed): at most once, such
# a runner sends the outputs of a batch it had committed after its successor's, and a
# runner that loses its partitions mid-batch does the same, unflushed outputs and all.
# At least once flushes before every commit and must keep the order.
OUT_OF_ORDER = "out-of-order-output"
# An event or record the checker cannot interpret: a malformed or unknown event, or a
# record in a topic that no recorded write produced. Never acceptable: what cannot be
# explained cannot be shown correct.
UNEXPLAINED = "unexplained-record"

KINDS = (
    LOST_ACKED, LOST, DUPLICATE, DUPLICATE_APPLICATION, WRONG_BALANCE, ABORTED_READ,
    UNCOMMITTED_READ, NON_MONOTONIC, OFFSET_REGRESSION, FENCED_WRITE, ORDER_VIOLATION,
    OUT_OF_ORDER, UNEXPLAINED,
)  # fmt: skip

# Never acceptable, whatever the guarantee: they break Kafka's or the sink's contract.
SAFETY = frozenset(KINDS) - {LOST_ACKED, LOST, DUPLICATE, OUT_OF_ORDER}
ALLOWED: dict[Guarantee, frozenset[str]] = {
    Guarantee.AT_MOST_ONCE: frozenset({LOST_ACKED, LOST, OUT_OF_ORDER}),
    Guarantee.AT_LEAST_ONCE: frozenset({DUPLICATE}),
    Guarantee.EXACTLY_ONCE: frozenset(),
}

READ_COMMITTED = "read_committed"
READ_UNCOMMITTED = "read_uncommitted"


@dataclass(frozen=True)
class Anomaly:
    """One thing the history shows that should not have happened (or is only allowed)."""

    kind: str
    subject: str
    detail: str


@dataclass
class Findings:
    """What the checker found in one history."""

    orders: int = 0
    lost: set[str] = field(default_factory=set)
    duplicated: set[str] = field(default_factory=set)
    balances_correct: bool | None = None
    anomalies: list[Anomaly] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for a in self.anomalies if a.kind == kind)

    def counts(self) -> dict[str, int]:
        return {kind: self.count(kind) for kind in KINDS}

    def add(self, kind: str, subject: str, detail: str) -> None:
        self.anomalies.append(Anomaly(kind, subject, detail))


def _by_type(history: Iterable[Event]) -> dict[str, list[Event]]:
    grouped: dict[str, list[Event]] = defaultdict(list)
    for event in history:
        grouped[event["type"]].append(event)
    return grouped


@dataclass
class _Txn:
    tid: str
    instance: str
    sends: list[str] = field(default_factory=list)
    commit_start: float | None = None
    committed: float | None = None
    aborted: bool = False
    offsets: list[Event] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        """committed, aborted, or unknown (commit started, the process died)."""
        if self.committed is not None:
            return "committed"
        if self.aborted or self.commit_start is None:
            # Never asked to commit: the broker aborts it (timeout or fencing).
            return "aborted"
        return "unknown"


class _Model:
    """The well-formed events of a history, indexed the ways the checks need them;
    ``malformed`` holds (position, problem) of every event set aside."""

    def __init__(self, history: Iterable[Any]) -> None:
        self.malformed: list[tuple[int, str]] = []
        self.events: list[Event] = []
        for position, event in enumerate(history):
            wrong = problem(event)
            if wrong is None:
                self.events.append(event)
            else:
                self.malformed.append((position, wrong))
        history = self.events
        self.by_type = _by_type(history)
        self.writes: dict[str, Event] = {e["id"]: e for e in self.by_type["send"]}
        self.acks: dict[str, Event] = {e["id"]: e for e in self.by_type["ack"]}
        self.txns: dict[str, _Txn] = {}
        for event in history:
            kind = event["type"]
            if kind == "txn_begin":
                self.txns[event["txn"]] = _Txn(event["tid"], event["instance"])
                continue
            txn = self.txns.get(event.get("txn") or "")
            if txn is None:
                continue
            if kind == "send":
                txn.sends.append(event["id"])
            elif kind == "txn_commit_start" and txn.commit_start is None:
                txn.commit_start = event["t"]  # a retried commit started with the first
            elif kind == "txn_commit":
                txn.committed = event["t"]
            elif kind == "txn_abort":
                txn.aborted = True
            elif kind == "txn_offsets":
                txn.offsets.append(event)
        self.final: dict[tuple[str, str], list[list[Any]]] = {
            (e["isolation"], e["topic"]): e["records"] for e in self.by_type["final_read"]
        }
        intents = self.by_type["intent"]
        self.intent: Event | None = intents[-1] if intents else None

    def txn_of(self, write_id: str) -> _Txn | None:
        write = self.writes.get(write_id)
        return None if write is None else self.txns.get(write.get("txn") or "")


def _check_lost_acked(model: _Model, findings: Findings) -> None:
    present: dict[str, set[str]] = defaultdict(set)
    for (isolation, topic), records in model.final.items():
        if isolation == READ_UNCOMMITTED:
            present[topic].update(r[2] for r in records)
    for write_id, ack in model.acks.items():
        topic = ack["topic"]
        if topic in present and write_id not in present[topic]:
            write = model.writes.get(write_id, {})
            findings.add(
                LOST_ACKED, write_id,
                f"{write.get('value_id')} acked at {topic}[{ack['partition']}]@{ack['offset']} "
                "is not in the log",
            )  # fmt: skip


def _check_lost(model: _Model, findings: Findings) -> None:
    intent = model.intent
    if intent is None:
        return
    orders = set(intent["orders"])
    findings.orders = len(orders)
    output = intent.get("output_topic")
    if output and (READ_COMMITTED, output) in model.final:
        seen = {r[3] for r in model.final[(READ_COMMITTED, output)]}
        for order in sorted(orders - seen):
            findings.lost.add(order)
            findings.add(LOST, order, f"never delivered to {output}")
    states = model.by_type["db_state"]
    if states:
        ledger = states[-1]["ledger"]
        for order in sorted(orders - set(ledger)):
            if order not in findings.lost:
                findings.add(LOST, order, "never charged in the database")
            findings.lost.add(order)


def _check_duplicates(model: _Model, findings: Findings) -> None:
    output = model.intent.get("output_topic") if model.intent else None
    for (isolation, topic), records in sorted(model.final.items()):
        if isolation != READ_COMMITTED:
            continue
        where: dict[str | None, list[str]] = defaultdict(list)
        for partition, offset, _id, value_id, _key in records:
            where[value_id].append(f"{partition}@{offset}")
        for value_id, places in sorted(where.items(), key=lambda item: str(item[0])):
            if len(places) > 1:
                if output is None or topic == output:
                    findings.duplicated.add(str(value_id))
                findings.add(DUPLICATE, str(value_id), f"{topic} holds it at {', '.join(places)}")


def _check_database(model: _Model, findings: Findings) -> None:
    applied: Counter[str] = Counter()
    for event in model.by_type["sink_commit"]:
        applied.update(event["keys"])
    for key, times in sorted(applied.items()):
        if times > 1:
            findings.duplicated.add(key)
            findings.add(DUPLICATE_APPLICATION, key, f"applied in {times} committed transactions")
    states = model.by_type["db_state"]
    if not states or model.intent is None:
        return
    state, orders = states[-1], model.intent["orders"]
    expected: Counter[str] = Counter()
    for order, amount in state["ledger"].items():
        customer, intended = orders.get(order, (None, None))
        if customer is None or amount != intended:
            findings.add(WRONG_BALANCE, order, f"ledger amount {amount} != order's {intended}")
            continue
        expected[customer] += amount
    balances = {c: b for c, b in state["balances"].items() if b}
    findings.balances_correct = balances == dict(expected)
    for customer in sorted(set(balances) | set(expected)):
        got, want = balances.get(customer, 0), expected.get(customer, 0)
        if got != want:
            findings.add(WRONG_BALANCE, customer, f"balance {got} != sum of its charges {want}")


def _committed_reads(model: _Model) -> Iterable[tuple[Event | None, str, str]]:
    """(poll event or None for the final read, write id, where) of read_committed reads."""
    for event in model.by_type["poll"]:
        if event.get("isolation") == READ_COMMITTED:
            where = f"{event['proc']} read {event['topic']}[{event['partition']}]"
            yield event, event["id"], f"{where}@{event['offset']}"
    for (isolation, topic), records in model.final.items():
        if isolation == READ_COMMITTED:
            for partition, offset, write_id, _v, _k in records:
                yield None, write_id, f"final read of {topic}[{partition}]@{offset}"


def _check_transactional_reads(model: _Model, findings: Findings) -> None:
    reported: set[tuple[str, str]] = set()
    for poll, write_id, where in _committed_reads(model):
        txn = model.txn_of(write_id)
        if txn is None:
            continue
        if txn.outcome == "aborted" and (ABORTED_READ, write_id) not in reported:
            reported.add((ABORTED_READ, write_id))
            value = model.writes[write_id].get("value_id")
            findings.add(ABORTED_READ, write_id, f"{where} saw {value} of an aborted transaction")
        elif (
            poll is not None
            and txn.commit_start is not None
            and poll["t"] < txn.commit_start
            and (UNCOMMITTED_READ, write_id) not in reported
        ):
            reported.add((UNCOMMITTED_READ, write_id))
            early = txn.commit_start - poll["t"]
            findings.add(UNCOMMITTED_READ, write_id, f"{where} {early:.3f}s before the commit")


def _check_monotonic(model: _Model, findings: Findings) -> None:
    last: dict[tuple[str, int, str, int], int] = {}
    for event in model.events:
        kind = event["type"]
        consumer = (event["proc"], event["pid"])
        if kind in ("assign", "revoke"):
            for topic, partition in event["partitions"]:
                last.pop((*consumer, topic, partition), None)  # type: ignore[arg-type]
        elif kind == "seek":
            last.pop((*consumer, event["topic"], event["partition"]), None)  # type: ignore[arg-type]
        elif kind == "poll":
            slot = (*consumer, event["topic"], event["partition"])
            previous = last.get(slot)  # type: ignore[arg-type]
            if previous is not None and event["offset"] <= previous:
                findings.add(
                    NON_MONOTONIC, f"{event['proc']}/{event['pid']}",
                    f"{event['topic']}[{event['partition']}] offset {event['offset']} "
                    f"after {previous} in one assignment",
                )  # fmt: skip
            last[slot] = event["offset"]  # type: ignore[index]


def _commits(model: _Model) -> list[tuple[float, str, list[list[Any]]]]:
    commits = [(e["t"], e["group"], e["offsets"]) for e in model.by_type["commit"]]
    commits += [
        (e["t"], e["group"], e["offsets"]) for e in model.by_type["sink_commit"] if e.get("offsets")
    ]
    for txn in model.txns.values():
        if txn.committed is not None:
            commits += [(txn.committed, e["group"], e["offsets"]) for e in txn.offsets]
    return sorted(commits, key=lambda c: c[0])


def _check_offset_regressions(model: _Model, findings: Findings) -> None:
    committed: dict[tuple[str, str, int], int] = {}
    for _t, group, offsets in _commits(model):
        for topic, partition, offset in offsets:
            slot = (group, topic, partition)
            if slot in committed and offset < committed[slot]:
                findings.add(
                    OFFSET_REGRESSION, f"{group}/{topic}[{partition}]",
                    f"committed {offset} after {committed[slot]}",
                )  # fmt: skip
            committed[slot] = offset


def _check_fencing(model: _Model, findings: Findings) -> None:
    """A transaction whose transactional id was taken over (a newer producer finished
    ``init_transactions`` with it) before it asked to commit was fenced: the broker
    must refuse its commit and never show its writes."""
    inits: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for event in model.by_type["txn_init"]:
        inits[event["tid"]].append((event["t"], event["instance"]))
    visible = {write_id for _poll, write_id, _where in _committed_reads(model)}
    for txn_id, txn in model.txns.items():
        if txn.commit_start is None or txn.outcome == "aborted" or txn.tid is None:
            continue
        mine = min((t for t, i in inits[txn.tid] if i == txn.instance), default=None)
        if mine is None:
            continue
        commit_start = txn.commit_start
        newer = sorted(
            (t, i) for t, i in inits[txn.tid] if mine < t < commit_start and i != txn.instance
        )
        if not newer:
            continue
        shown = [w for w in txn.sends if w in visible]
        if txn.outcome == "committed":
            findings.add(
                FENCED_WRITE, txn_id,
                f"{txn.instance} committed after {newer[0][1]} took over {txn.tid}",
            )  # fmt: skip
        elif shown:
            findings.add(
                FENCED_WRITE, txn_id,
                f"{len(shown)} writes of {txn.instance} are visible although {newer[0][1]} "
                f"took over {txn.tid} before it asked to commit",
            )  # fmt: skip


def _check_order(model: _Model, findings: Findings) -> None:
    # A producer's writes of one key to one partition keep their send order.
    per_producer: dict[tuple[int, str, str, int, Any], list[int]] = defaultdict(list)
    for write_id, write in model.writes.items():
        ack = model.acks.get(write_id)
        # An acknowledgement without an offset says nothing about order.
        if ack is not None and ack["offset"] is not None:
            slot = (write["pid"], write["proc"], ack["topic"], ack["partition"], write.get("key"))
            per_producer[slot].append(ack["offset"])
    for (pid, proc, topic, partition, key), offsets in sorted(
        per_producer.items(), key=lambda item: str(item[0])
    ):
        for earlier, later in itertools.pairwise(offsets):
            if later <= earlier:
                findings.add(
                    ORDER_VIOLATION, f"{topic}[{partition}] key {key}",
                    f"{proc}/{pid} sent a write that landed at {later} before one at {earlier}",
                )  # fmt: skip
                break
    _check_mapping_order(model, findings)


def _check_mapping_order(model: _Model, findings: Findings) -> None:
    """Per key, the output holds first copies of the inputs in the input's order."""
    intent = model.intent
    if intent is None or not intent.get("output_topic"):
        return
    source = model.final.get((READ_COMMITTED, intent.get("input_topic") or ""))
    output = model.final.get((READ_COMMITTED, intent["output_topic"]))
    if source is None or output is None:
        return
    position: dict[str | None, tuple[int, int]] = {}
    for partition, offset, _id, value_id, _key in source:
        position.setdefault(value_id, (partition, offset))
    seen: set[str | None] = set()
    last: dict[tuple[int, Any], tuple[str | None, tuple[int, int]]] = {}
    for partition, _offset, _id, value_id, key in sorted(output, key=lambda r: (r[0], r[1])):
        if value_id in seen or value_id not in position:
            continue
        seen.add(value_id)
        slot = (partition, key)
        previous = last.get(slot)
        if previous is not None and position[value_id] < previous[1]:
            findings.add(
                OUT_OF_ORDER, f"{intent['output_topic']}[{partition}] key {key}",
                f"{value_id} (input {position[value_id]}) came after {previous[0]} "
                f"(input {previous[1]})",
            )  # fmt: skip
        last[slot] = (value_id, position[value_id])


def _check_explained(model: _Model, findings: Findings) -> None:
    """Every malformed event, and every record read at the end that no recorded write
    produced, is an unexplained record."""
    for position, wrong in model.malformed:
        findings.add(UNEXPLAINED, f"event {position}", wrong)
    for (isolation, topic), records in sorted(model.final.items()):
        for partition, offset, write_id, value_id, _key in records:
            if write_id not in model.writes:
                findings.add(
                    UNEXPLAINED, f"{topic}[{partition}]@{offset}",
                    f"{isolation} read of {value_id!r:.40} (write {write_id!r:.60}) that no "
                    "recorded send produced",
                )  # fmt: skip


CHECKS = (
    _check_explained, _check_lost_acked, _check_lost, _check_duplicates, _check_database,
    _check_transactional_reads, _check_monotonic, _check_offset_regressions,
    _check_fencing, _check_order,
)  # fmt: skip
# The subject of the finding that replaces a check that broke on the history.
CHECKER_ERROR = "checker"


def check(history: Iterable[Any]) -> Findings:
    """Every anomaly of ``history`` (a merged, time-ordered event list). Never raises:
    an event it cannot interpret, or a check that breaks on the history, is an
    ``unexplained-record`` finding."""
    model = _Model(history)
    findings = Findings()
    for one_check in CHECKS:
        try:
            one_check(model, findings)
        except Exception as exc:  # the last line of defence; the property tests aim at it
            findings.add(
                UNEXPLAINED, CHECKER_ERROR,
                f"{one_check.__name__} could not interpret the history: {exc!r:.200}",
            )  # fmt: skip
    return findings


@dataclass(frozen=True)
class Verdict:
    """Whether a run met its guarantee's expectation, and why not."""

    ok: bool
    violations: dict[str, int]
    allowed: dict[str, int]

    def summary(self) -> str:
        if self.ok:
            return "meets its guarantee"
        return "violated: " + ", ".join(f"{n} {k}" for k, n in self.violations.items())


def verdict(guarantee: Guarantee, findings: Findings) -> Verdict:
    """At most once may lose (and, unfenced, reorder its outputs), at least once may
    duplicate, exactly once may do neither; no guarantee allows the safety anomalies
    (aborted reads, wrong balances, a producer's writes out of order, ...)."""
    counts = {k: n for k, n in findings.counts().items() if n}
    allowed = {k: n for k, n in counts.items() if k in ALLOWED[guarantee]}
    violations = {k: n for k, n in counts.items() if k not in ALLOWED[guarantee]}
    return Verdict(not violations, violations, allowed)
