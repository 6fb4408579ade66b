"""End-to-end verify runs: the order/payment pipeline under real faults (SIGKILLed
producers, workers and broker), one run per guarantee, and the mock-cluster run that
shows the checker catches a broker whose read_committed lets aborted records through."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from onceflow.guarantees import Guarantee
from onceflow.testing.mock_cluster import mock_cluster
from onceflow.verify import checker, verify
from onceflow.verify.matrix import Cell, verify_cell
from onceflow.verify.outcome import Outcome
from onceflow.verify.sinks import SinkDatabases

ORDERS = 200


def test_at_most_once_loses_under_crashes_but_never_duplicates() -> None:
    result = verify(
        Guarantee.AT_MOST_ONCE,
        ["producer-crash", "crash-before-commit", "crash-after-commit"],
        orders=ORDERS,
    )
    findings = result.findings
    assert result.ok, result.to_json()
    assert len(result.notes) == 3 and all("killed" in n for n in result.notes), result.notes
    # The producer died with records queued and committed-but-unprocessed batches vanish.
    assert findings.lost, "at-most-once should have lost the crashed producer's orders"
    assert findings.duplicated == set()
    assert findings.balances_correct is True


def test_at_least_once_duplicates_but_never_loses_and_applies_once() -> None:
    result = verify(
        Guarantee.AT_LEAST_ONCE,
        ["producer-crash", "crash-before-commit", "crash-mid-transaction"],
        orders=ORDERS,
    )
    findings = result.findings
    assert result.ok, result.to_json()
    assert findings.lost == set()
    # The batch processed before the kill is processed again: paid twice on Kafka...
    assert findings.duplicated, "the redone batch should show up twice in payments"
    # ...but the idempotent sink applied every order once.
    assert findings.count(checker.DUPLICATE_APPLICATION) == 0
    assert findings.balances_correct is True


def test_exactly_once_neither_loses_nor_duplicates(tmp_path: Path) -> None:
    # Through the command line, so exit status, --json and --report are checked too.
    done = subprocess.run(
        [
            sys.executable, "-m", "onceflow", "verify", "--guarantee", "exactly-once",
            "--fault", "crash-mid-transaction", "--fault", "crash-before-commit",
            "--fault", "broker-kill", "--orders", str(ORDERS), "--json",
            "--report", str(tmp_path / "report"),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = json.loads(done.stdout)["runs"]
    assert run["ok"] and run["lost"] == 0 and run["duplicated"] == 0, run
    assert run["balances_correct"] is True
    assert any("broker pid" in n for n in run["notes"]), run["notes"]
    assert (tmp_path / "report" / "lost-duplicated.png").stat().st_size > 1000
    assert (tmp_path / "report" / "timeline-1.png").stat().st_size > 1000
    assert "exactly-once" in (tmp_path / "report" / "report.md").read_text()


def test_mock_cluster_read_committed_shows_aborted_records() -> None:
    with mock_cluster() as mock:
        result = verify(
            Guarantee.EXACTLY_ONCE,
            ["crash-mid-transaction"],
            orders=ORDERS,
            bootstrap=mock.bootstrap,
            create_topic=mock.create_topic,
        )
    assert result.findings.count(checker.ABORTED_READ) > 0, result.to_json()
    assert not result.ok
    assert checker.ABORTED_READ in result.verdict.violations


def test_at_least_once_worker_survives_a_broker_restart(tmp_path: Path) -> None:
    # The restarted broker has forgotten the group, so the worker's next synchronous
    # commit is refused (ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID). The runner must treat
    # that as a stale assignment and keep going; a crash shows up as a worker-failure note.
    result = verify(Guarantee.AT_LEAST_ONCE, ["broker-kill"], orders=ORDERS, workdir=tmp_path)
    assert any("broker pid" in n for n in result.notes), result.notes
    failures = [n for n in result.notes if n.startswith("worker-failure")]
    assert failures == [], failures
    assert result.ok and result.findings.lost == set(), result.to_json()
    # The one worker finished the run itself and saw the refused commit.
    (log,) = tmp_path.glob("processor-*.log")
    stats = json.loads(log.read_text().strip().splitlines()[-1])
    assert stats["errors"], f"no refused commit: the fault missed the commit path {stats}"


@pytest.mark.parametrize("guarantee", list(Guarantee))
def test_zombie_resumed_after_its_partitions_moved(guarantee: Guarantee, tmp_path: Path) -> None:
    # The zombie's successor is a restart of the same instance: the same group.instance.id
    # and transactional id. Resumed, the zombie finds itself fenced by its own identity.
    # At most once it was stopped right after committing a batch it had not processed;
    # nothing fences it, so it may send that batch's payments after its successor's:
    # out of order, which at most once allows, while each payment still goes out once.
    result = verify(guarantee, ["zombie"], orders=ORDERS, workdir=tmp_path)
    (note,) = [n for n in result.notes if n.startswith("zombie:")]
    assert "resumed" in note, note
    zombie_proc = note.split()[1]  # "zombie: processor-N stopped at ...; resumed after M"
    successor_proc = note.split("resumed after ")[1].split(",")[0]
    assert not [n for n in result.notes if n.startswith("worker-failure")], result.notes
    findings = result.findings
    assert result.ok, result.to_json()
    assert findings.count(checker.FENCED_WRITE) == 0
    assert findings.count(checker.ORDER_VIOLATION) == 0  # one producer's own order
    assert findings.balances_correct is True
    if guarantee is not Guarantee.AT_MOST_ONCE:
        assert findings.lost == set()
    if guarantee is not Guarantee.AT_LEAST_ONCE:
        assert findings.duplicated == set(), "the zombie's stale payments became visible"
    if guarantee is not Guarantee.AT_MOST_ONCE:
        assert findings.count(checker.OUT_OF_ORDER) == 0
    # The zombie stepped aside: it stopped, saying it was fenced by its own identity...
    fenced = [n for n in result.notes if n.startswith("worker-fenced: ")]
    assert [n.split()[1] for n in fenced] == [zombie_proc], result.notes
    assert "fenced by its own identity" in (tmp_path / f"{zombie_proc}.log").read_text()
    # ...and never fenced its successor back (a rebuilt producer, a rejoin), which ran
    # to the end on its first producer and membership.
    successor = json.loads(
        (tmp_path / f"{successor_proc}.log").read_text().strip().splitlines()[-1]
    )
    assert successor["producer_rebuilds"] == 0 and successor["rejoins"] == 0, successor
    assert successor["processed"] > 0, successor


@pytest.mark.parametrize("sink", ["sqlite", "postgresql"])
def test_exactly_once_sink_under_the_zombie_fault(sink: str) -> None:
    with SinkDatabases() as databases:
        result = verify_cell(
            Cell(Guarantee.EXACTLY_ONCE, ("zombie",), sink), lambda *_: None, databases,
            orders=ORDERS,
        )  # fmt: skip
    assert result.sink == sink
    (note,) = [n for n in result.notes if n.startswith("zombie:")]
    assert "resumed" in note, note
    zombie_proc = note.split()[1]
    # Resumed, the zombie finds its successor (a restart with its identity) holding its
    # membership, and stops instead of rejoining: no other worker died.
    fenced = [n.split()[1] for n in result.notes if n.startswith("worker-fenced: ")]
    assert fenced == [zombie_proc], result.notes
    assert result.outcome is Outcome.PASS, result.to_json()
    assert result.findings.lost == set() and result.findings.duplicated == set()
    assert result.findings.balances_correct is True
