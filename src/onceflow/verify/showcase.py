"""The ``make demo`` matrix: every guarantee against every fault the embedded broker
takes (the default matrix of ``onceflow verify``), measured.

Each cell is its own verify run (own broker process, own topics) of the order/payment
pipeline with one fault; two cells run at a time.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from onceflow.guarantees import Guarantee
from onceflow.verify.checker import OUT_OF_ORDER
from onceflow.verify.faults import EMBEDDED, FAULTS
from onceflow.verify.matrix import STYLE, Cell, plan, run_cells, verify_cell
from onceflow.verify.outcome import exit_code
from onceflow.verify.report import FAULT_WIDTH, GUARANTEE_WIDTH
from onceflow.verify.run import Result
from onceflow.verify.sinks import SinkDatabases

SHOWCASE_ORDERS = 300
# Three guarantee columns beside the fault column, borders and padding in 80 columns.
GUARANTEE_COLUMN = (80 - FAULT_WIDTH - 13) // 3

EXPECTED = {
    Guarantee.AT_MOST_ONCE: "may lose, never duplicates",
    Guarantee.AT_LEAST_ONCE: "never loses, may duplicate",
    Guarantee.EXACTLY_ONCE: "neither",
}


def _cell(result: Result) -> str:
    f = result.findings
    lost = f"[red]{len(f.lost)} lost[/red]" if f.lost else "0 lost"
    dup = f"[yellow]{len(f.duplicated)} dup[/yellow]" if f.duplicated else "0 dup"
    # Allowed at most once (nothing fences its zombie), but shown: it happened.
    reordered = f.count(OUT_OF_ORDER)
    order = f"\n[yellow]{reordered} out of order[/yellow]" if reordered else ""
    style = STYLE[result.outcome]
    return f"{lost}\n{dup}{order}\n[{style}]{result.outcome.value}[/{style}]"


def matrix(results: dict[Cell, Result]) -> Table:
    """Faults down, guarantees across; each cell: orders lost, duplicated, verdict.
    At most 80 columns wide; fault and guarantee names are never cut."""
    table = Table(title="the order/payment pipeline under faults", show_lines=True)
    table.add_column("fault", min_width=FAULT_WIDTH)
    for guarantee in Guarantee:
        table.add_column(
            f"{guarantee.value}\n[dim]{EXPECTED[guarantee]}[/dim]",
            min_width=GUARANTEE_WIDTH, max_width=GUARANTEE_COLUMN,
        )  # fmt: skip
    rows = sorted(
        {(cell.faults, cell.sink) for cell in results},
        key=lambda row: (row[1] or "", list(FAULTS).index(row[0][0])),
    )
    for names, sink in rows:
        (name,) = names
        where = f"[bold]{sink} sink[/bold]\n" if sink else ""
        cells = [results.get(Cell(g, names, sink)) for g in Guarantee]
        table.add_row(
            f"{name}\n{where}[dim]{FAULTS[name].description}[/dim]",
            *("-" if cell is None else _cell(cell) for cell in cells),
        )
    return table


def showcase(console: Console | None = None, *, orders: int = SHOWCASE_ORDERS) -> int:
    """Run the matrix on embedded brokers and print it; the exit status of its
    verdicts (0 pass, 1 a run failed, 2 a run was inconclusive)."""
    console = console or Console()
    cells = plan(list(Guarantee), [], EMBEDDED)
    with SinkDatabases() as databases:
        results = run_cells(
            cells, lambda cell, step: verify_cell(cell, step, databases, orders=orders), console
        )
    console.print(matrix(dict(zip(cells, results, strict=True))))
    return exit_code(r.outcome for r in results)
