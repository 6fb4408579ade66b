"""Run the copier liveness scenario (issue 15) many times in a row.

Each run starts its own ``onceflow broker`` process and two transactional copiers,
kills one copier and then the broker mid-run, and checks that every input was copied
exactly once with no stall beyond the session timeout plus a rebalance (see
``onceflow.testing.liveness``). Not part of ``make test``: at full size one run takes
about half a minute.

usage: .venv/bin/python tooling/copier_liveness.py [--runs 20] [--records 30000] [--json]

Exits 1 if any run failed; the data dir and logs of failed runs are kept.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from onceflow.testing.liveness import LivenessResult, run_liveness

HEADER = f"{'run':>3} {'copied':>7} {'dups':>5} {'lost':>6} {'stall s':>7}  {'stalled':<12} " \
    f"{'secs':>5}  verdict"  # fmt: skip


def row(number: int, result: LivenessResult) -> str:
    verdict = "ok" if result.ok else "FAILED"
    return (
        f"{number:>3} {result.copied:>7} {result.duplicates:>5} {result.lost:>6} "
        f"{result.stall.seconds:>7.1f}  {result.stall.who[:12]:<12} {result.seconds:>5.0f}  "
        f"{verdict}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Run the copier liveness scenario (issue 15) several times in a row."
    )
    parser.add_argument("--runs", type=int, default=20, help="runs in a row (default 20)")
    parser.add_argument("--records", type=int, default=30_000, help="inputs per run")
    parser.add_argument(
        "--deadline", type=float, default=180.0, help="seconds each run may copy for"
    )
    parser.add_argument("--workdir", type=Path, help="where runs keep data (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    args = parser.parse_args()
    if args.runs < 1 or args.records < 3 or args.deadline <= 0:
        parser.error("--runs must be at least 1, --records at least 3, --deadline positive")

    root = args.workdir or Path(tempfile.mkdtemp(prefix="copier-liveness-"))
    failed = 0
    if not args.json:
        print(HEADER)
    for number in range(1, args.runs + 1):
        workdir = root / f"run-{number:02d}"
        result = run_liveness(workdir, records=args.records, deadline=args.deadline)
        if result.ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            failed += 1
        if args.json:
            print(json.dumps({"run": number, **result.as_dict(), "workdir": str(workdir)}))
        else:
            print(row(number, result))
            for problem in result.problems():
                print(f"    {problem}")
            if not result.ok:
                print(f"    logs: {workdir}")
        sys.stdout.flush()
    if not args.json:
        print(f"{args.runs - failed} of {args.runs} runs ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
