"""End-to-end verify runs: the order/payment pipeline under real faults (SIGKILLed
producers, workers and broker), one run per guarantee, and the mock-cluster run that
shows the checker catches a broker whose read_committed lets aborted records through."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from onceflow.guarantees import Guarantee
from onceflow.testing.mock_cluster import mock_cluster
from onceflow.verify import checker, verify

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
