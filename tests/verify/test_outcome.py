"""Verdicts, the fault registry and the run plan: which runs a verify invocation makes,
and how their outcomes become an exit status; plus the command line's smoke test and
an inconclusive run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from onceflow.guarantees import Guarantee
from onceflow.verify import faults
from onceflow.verify.checker import Findings, check, verdict
from onceflow.verify.faults import EMBEDDED, Capability, Fault, bootstrap_target
from onceflow.verify.matrix import Cell, plan
from onceflow.verify.outcome import Outcome, exit_code, outcome_of
from onceflow.verify.report import print_results
from onceflow.verify.run import Result
from onceflow.verify.showcase import matrix
from onceflow.verify.timeline import timeline

from .test_checker import clean


def test_a_violation_fails_and_a_doubt_is_never_a_pass() -> None:
    assert outcome_of(False, []) is Outcome.PASS
    assert outcome_of(False, ["zombie: did not land"]) is Outcome.INCONCLUSIVE
    assert outcome_of(True, ["zombie: did not land"]) is Outcome.FAIL
    assert exit_code([Outcome.PASS, Outcome.INCONCLUSIVE]) == 2
    assert exit_code([Outcome.INCONCLUSIVE, Outcome.FAIL, Outcome.PASS]) == 1
    assert exit_code([Outcome.PASS]) == 0


def test_the_faults_that_apply_follow_from_the_targets_capabilities() -> None:
    embedded = {f.name for f in faults.applicable(EMBEDDED)}
    anywhere = {f.name for f in faults.applicable(bootstrap_target("kafka:9092"))}
    assert "broker-kill" in embedded and "broker-kill" not in anywhere
    assert anywhere == embedded - {"broker-kill"}
    with pytest.raises(ValueError, match="broker-process"):
        faults.parse(["broker-kill"], bootstrap_target("kafka:9092"))


def test_a_fault_that_cannot_strike_a_guarantee_is_left_out_of_its_runs() -> None:
    # acks=0 gets no Produce responses: at most once there is none to lose.
    at_most_once = [c.faults for c in plan([Guarantee.AT_MOST_ONCE], [], EMBEDDED)]
    assert ("lost-produce-response",) not in at_most_once
    assert ("zombie",) in at_most_once
    for guarantee in (Guarantee.AT_LEAST_ONCE, Guarantee.EXACTLY_ONCE):
        assert ("lost-produce-response",) in [c.faults for c in plan([guarantee], [], EMBEDDED)]
    with pytest.raises(ValueError, match="acks=0"):
        faults.parse(["lost-produce-response"], EMBEDDED, Guarantee.AT_MOST_ONCE)


def test_a_new_fault_is_one_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults.registry, "FAULTS", dict(faults.FAULTS))
    faults.register(
        Fault(
            "controller-kill", "kill the active controller", "live",
            requires=frozenset({Capability.CLIENTS, Capability.CLUSTER}),
            inject=lambda ctx: "killed",
        )
    )  # fmt: skip
    cluster = faults.Target("cluster", frozenset({Capability.CLIENTS, Capability.CLUSTER}))
    assert "controller-kill" in [f.name for f in faults.registry.applicable(cluster)]
    assert "controller-kill" not in [f.name for f in faults.registry.applicable(EMBEDDED)]


def test_without_faults_each_applicable_fault_gets_its_own_run() -> None:
    cells = plan([Guarantee.AT_LEAST_ONCE], [], EMBEDDED)
    assert cells == [Cell(Guarantee.AT_LEAST_ONCE, (f.name,)) for f in faults.applicable(EMBEDDED)]
    assert len(cells) >= 8
    # Exactly once also runs the zombie against the exactly-once database sinks.
    sinks = [c for c in plan([Guarantee.EXACTLY_ONCE], [], EMBEDDED) if c.sink]
    assert sinks == [Cell(Guarantee.EXACTLY_ONCE, ("zombie",), s) for s in ("sqlite", "postgresql")]
    assert plan([Guarantee.AT_MOST_ONCE], ["none"], EMBEDDED) == [Cell(Guarantee.AT_MOST_ONCE, ())]
    assert plan(list(Guarantee), ["zombie", "network-cut"], EMBEDDED)[2].faults == (
        "zombie", "network-cut",
    )  # fmt: skip


def _result(guarantee: Guarantee, names: tuple[str, ...], doubts: list[str]) -> Result:
    findings = Findings(orders=10)
    return Result(guarantee, names, "embedded", findings, verdict(guarantee, findings), 1.0,
                  inconclusive=doubts)  # fmt: skip


def test_tables_fit_80_columns_with_whole_names() -> None:
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    results = [
        _result(g, ("lost-produce-response", "crash-mid-transaction"), []) for g in Guarantee
    ]
    results.append(_result(Guarantee.AT_LEAST_ONCE, (), ["zombie: did not land"]))
    print_results(console, results)
    cells = plan(list(Guarantee), [], EMBEDDED)
    console.print(matrix({c: _result(c.guarantee, c.faults, []) for c in cells}))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    for name in ["at-least-once", "lost-produce-response", "crash-mid-transaction", "inconclusive"]:
        assert name in text
    assert "none (smoke test)" in text
    assert all(f.name in text for f in faults.applicable(EMBEDDED))


def _verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onceflow", "verify", "--guarantee", "at-least-once", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_fault_none_is_a_smoke_test_and_says_so() -> None:
    done = _verify("--fault", "none", "--orders", "20")
    assert "smoke test" in done.stdout, done.stdout + done.stderr
    done = _verify("--fault", "none", "--orders", "20", "--json")
    (run,) = json.loads(done.stdout)["runs"]
    assert run["smoke_test"] is True and run["faults"] == [] and run["verdict"] == "pass"
    assert done.returncode == 0


def test_a_fault_that_does_not_land_is_inconclusive() -> None:
    # Two orders are one batch: the worker never reaches its second commit to die there.
    done = _verify("--fault", "crash-after-commit", "--orders", "2", "--json")
    (run,) = json.loads(done.stdout)["runs"]
    assert done.returncode == 2, run
    assert run["verdict"] == "inconclusive" and not run["ok"], run
    assert any("did not land" in reason for reason in run["inconclusive"]), run


def test_timeline_of_a_run_with_history_and_none_without(tmp_path: Path) -> None:
    h = clean()
    h.add("fault", "orchestrator", name="broker-kill", detail="killed")
    findings = check(h.events)
    findings.lost.add("o1")
    run = Result(Guarantee.EXACTLY_ONCE, ("broker-kill",), "embedded", findings,
                 verdict(Guarantee.EXACTLY_ONCE, findings), 1.0, history=h.events)  # fmt: skip
    drawn = timeline(run, tmp_path / "timeline.png")
    assert drawn is not None and drawn.stat().st_size > 1000
    assert timeline(_result(Guarantee.EXACTLY_ONCE, (), []), tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
