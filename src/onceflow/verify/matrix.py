"""Which runs a verify invocation makes, and running them with progress shown.

Without ``--fault`` every fault that applies to the target gets a run of its own, for
each guarantee, and exactly once also runs the zombie fault against the exactly-once
database sink on SQLite and on PostgreSQL; named faults are injected together in one
run per guarantee; ``none`` alone is one fault-free run (a smoke test).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from onceflow.guarantees import Guarantee
from onceflow.testing.postgres import PostgresNotInstalled
from onceflow.verify.checker import Findings, verdict
from onceflow.verify.faults import NO_FAULT, Target, applicable
from onceflow.verify.outcome import Outcome
from onceflow.verify.run import Progress as StepProgress
from onceflow.verify.run import Result, verify
from onceflow.verify.sinks import SinkDatabases

PARALLEL_RUNS = 2  # two runs at a time keep 2 cores busy without starving the faults
STYLE = {Outcome.PASS: "green", Outcome.FAIL: "red", Outcome.INCONCLUSIVE: "yellow"}


#: The exactly-once database sinks the default matrix runs under the zombie fault.
SINKS = ("sqlite", "postgresql")
SINK_FAULT = "zombie"


@dataclass(frozen=True)
class Cell:
    """One run to make: a guarantee under a set of faults (empty: a smoke test), with
    the payments on Kafka (``sink`` None) or only in an exactly-once database sink."""

    guarantee: Guarantee
    faults: tuple[str, ...]
    sink: str | None = None

    @property
    def label(self) -> str:
        where = f" / {self.sink} sink" if self.sink else ""
        return f"{self.guarantee.value} / {', '.join(self.faults) or 'none (smoke test)'}{where}"


def plan(guarantees: Sequence[Guarantee], faults: Sequence[str], target: Target) -> list[Cell]:
    """The runs of one invocation (see the module docstring)."""
    if not faults:
        cells = [Cell(g, (f.name,)) for g in guarantees for f in applicable(target, g)]
        if Guarantee.EXACTLY_ONCE in guarantees:
            cells += [Cell(Guarantee.EXACTLY_ONCE, (SINK_FAULT,), sink) for sink in SINKS]
        return cells
    chosen = () if list(faults) == [NO_FAULT] else tuple(faults)
    return [Cell(g, chosen) for g in guarantees]


RunOne = Callable[[Cell, StepProgress], Result]


def verify_cell(cell: Cell, step: StepProgress, databases: SinkDatabases, **options: Any) -> Result:
    """``verify`` for one cell (``options``: orders, bootstrap); a sink whose database
    cannot be had makes the cell inconclusive."""
    try:
        url = databases.url(cell.sink)
    except PostgresNotInstalled as exc:
        empty = Findings()
        return Result(cell.guarantee, cell.faults, "embedded", empty,
                      verdict(cell.guarantee, empty), 0.0, inconclusive=[str(exc)],
                      sink=cell.sink)  # fmt: skip
    return verify(
        cell.guarantee, list(cell.faults), eos_sink=cell.sink is not None, database_url=url,
        progress=step, **options,
    )  # fmt: skip


def run_cells(
    cells: Sequence[Cell],
    run_one: RunOne,
    console: Console,
    *,
    parallel: int = PARALLEL_RUNS,
) -> list[Result]:
    """Run every cell (``parallel`` at a time) with a progress bar per running run and
    one line per finished run; the results in the order of ``cells``."""
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
    )  # fmt: skip
    results: dict[int, Result] = {}
    started = time.monotonic()
    with (
        Progress(*columns, console=console, transient=True) as progress,
        ThreadPoolExecutor(max(1, parallel)) as pool,
    ):
        overall = progress.add_task(f"{len(cells)} runs", total=len(cells))

        def one(index: int, cell: Cell) -> Result:
            task = progress.add_task(cell.label, total=None)

            def step(what: str, done: int, total: int) -> None:
                progress.update(task, description=f"{cell.label}: {what}", completed=done,
                                total=total)  # fmt: skip

            try:
                return run_one(cell, step)
            finally:
                progress.remove_task(task)

        futures: list[Future[Result]] = [pool.submit(one, i, c) for i, c in enumerate(cells)]
        for index, future in enumerate(futures):
            result = future.result()
            results[index] = result
            style = STYLE[result.outcome]
            console.print(
                f"[{style}]{result.outcome.value:>12}[/{style}]  {cells[index].label} "
                f"({result.seconds:.0f} s)"
            )
            progress.advance(overall)
    console.print(f"{len(cells)} runs in {time.monotonic() - started:.0f} s")
    return [results[i] for i in range(len(cells))]
