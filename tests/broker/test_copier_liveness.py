"""Liveness under combined faults (issue 15): two transactional copiers on a real
broker process, one copier and then the broker SIGKILLed mid-run.

The scenario lives in ``onceflow.testing.liveness``; ``tooling/copier_liveness.py``
runs it many times in a row at full size.
"""

from __future__ import annotations

from pathlib import Path

from onceflow.testing.liveness import run_liveness

# Large enough that both faults land mid-copy, small enough for well under a minute.
RECORDS = 6000


def test_every_input_is_copied_once_without_a_stall_through_copier_and_broker_kills(
    tmp_path: Path,
) -> None:
    result = run_liveness(tmp_path, records=RECORDS, deadline=90.0)

    assert [fault.split(" at ")[0] for fault in result.faults] == [
        "copier a1 killed",
        "broker killed",
    ]
    assert result.problems() == []
    assert result.ok
    assert (result.copied, result.lost, result.duplicates) == (RECORDS, 0, 0)
    # The aborts on purpose happened, and were copied again rather than skipped.
    assert result.aborts > 0
    assert result.stall.seconds <= result.stall_limit
