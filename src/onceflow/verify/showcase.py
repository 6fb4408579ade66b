"""The ``make demo`` matrix: every guarantee against every failure point, measured.

Each cell is its own verify run (own broker process, own topics) of the order/payment
pipeline with one fault; two cells run at a time.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from onceflow.guarantees import Guarantee
from onceflow.verify.faults import FAULTS, SHOWCASE_FAULTS
from onceflow.verify.run import Result, RunError, verify

SHOWCASE_ORDERS = 300
PARALLEL_RUNS = 2

EXPECTED = {
    Guarantee.AT_MOST_ONCE: "may lose, never duplicates",
    Guarantee.AT_LEAST_ONCE: "never loses; may deliver twice, the idempotent sink applies once",
    Guarantee.EXACTLY_ONCE: "neither loses nor duplicates",
}


def _cell(result: Result | str) -> str:
    if isinstance(result, str):
        return f"[red]run broke[/red]\n{result[:60]}"
    f = result.findings
    lost = f"[red]{len(f.lost)} lost[/red]" if f.lost else "0 lost"
    dup = f"[yellow]{len(f.duplicated)} dup[/yellow]" if f.duplicated else "0 dup"
    balances = "balances ok" if f.balances_correct else "[red]balances WRONG[/red]"
    verdict = "[green]pass[/green]" if result.ok else f"[red]FAIL[/red] {result.verdict.summary()}"
    return f"{lost} · {dup}\n{balances} · {verdict}"


def matrix(results: dict[tuple[Guarantee, str], Result | str]) -> Table:
    """Faults down, guarantees across; each cell: orders lost, duplicated, balances."""
    table = Table(title="onceflow: the order/payment pipeline under faults", show_lines=True)
    table.add_column("failure point")
    for guarantee in Guarantee:
        table.add_column(f"{guarantee.value}\n[dim]{EXPECTED[guarantee]}[/dim]")
    for fault in SHOWCASE_FAULTS:
        table.add_row(
            f"{fault}\n[dim]{FAULTS[fault].description}[/dim]",
            *(_cell(results[(g, fault)]) for g in Guarantee),
        )
    return table


def showcase(console: Console | None = None, *, orders: int = SHOWCASE_ORDERS) -> int:
    """Run the matrix on embedded brokers and print it; 0 if every cell met its
    guarantee's expectation, 1 otherwise."""
    console = console or Console()
    started = time.monotonic()
    cells = [(g, f) for g in Guarantee for f in SHOWCASE_FAULTS]
    results: dict[tuple[Guarantee, str], Result | str] = {}
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
    )  # fmt: skip
    with (
        Progress(*columns, console=console, transient=True) as progress,
        ThreadPoolExecutor(PARALLEL_RUNS) as pool,
    ):
        task = progress.add_task(f"{orders} orders x {len(cells)} runs", total=len(cells))
        futures: dict[Future[Result], tuple[Guarantee, str]] = {
            pool.submit(verify, g, [f], orders=orders): (g, f) for g, f in cells
        }
        for future in as_completed(futures):
            try:
                results[futures[future]] = future.result()
            except RunError as exc:
                results[futures[future]] = str(exc).splitlines()[0]
            progress.advance(task)
    console.print(matrix(results))
    ok = all(isinstance(r, Result) and r.ok for r in results.values())
    console.print(
        f"{len(cells)} runs, {orders} orders each, in {time.monotonic() - started:.0f} s: "
        + ("[green]every guarantee held[/green]" if ok else "[red]some runs failed[/red]")
    )
    return 0 if ok else 1
