"""Reporting verify results: a rich table, JSON, and a Markdown report with a PNG chart."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from onceflow.verify.checker import KINDS
from onceflow.verify.matrix import STYLE
from onceflow.verify.run import Result
from onceflow.verify.timeline import timeline

# The longest guarantee and fault names: their columns are never narrower, so no name
# is ever cut (the table still fits 80 columns).
GUARANTEE_WIDTH = len("at-least-once")
FAULT_WIDTH = len("lost-produce-response")


def _yes_no(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "NO")


def _faults(result: Result) -> str:
    names = ", ".join(result.faults) or "none (smoke test)"
    return f"{names}, {result.sink} sink" if result.sink else names


def results_table(results: Sequence[Result], title: str = "onceflow verify") -> Table:
    """One row per run: orders lost and duplicated, other anomalies, verdict; at most
    80 columns wide, guarantee and fault names whole (the reasons follow the table)."""
    table = Table(title=title)
    table.add_column("guarantee", min_width=GUARANTEE_WIDTH, no_wrap=True)
    table.add_column("faults", min_width=FAULT_WIDTH)
    table.add_column("lost", justify="right")
    table.add_column("dup", justify="right")
    table.add_column("other", justify="right")
    table.add_column("verdict", no_wrap=True)
    for r in results:
        f = r.findings
        others = sum(n for k, n in f.counts().items() if k not in ("lost", "duplicate"))
        style = STYLE[r.outcome]
        table.add_row(
            r.guarantee.value, _faults(r).replace(", ", "\n"), str(len(f.lost)),
            str(len(f.duplicated)), str(others), f"[{style}]{r.outcome.value}[/{style}]",
        )  # fmt: skip
    return table


def print_results(console: Console, results: Sequence[Result]) -> None:
    """The table, then why each run that did not pass did not, with its notes and
    first violations."""
    console.print(results_table(results))
    for r in results:
        if r.ok:
            continue
        style = STYLE[r.outcome]
        console.print(f"[bold {style}]{r.guarantee.value} under {_faults(r)}: {r.summary()}")
        for note in r.notes:
            console.print(f"  fault  {note}")
        for anomaly in r.findings.anomalies[:10]:
            if anomaly.kind in r.verdict.violations:
                console.print(f"  {anomaly.kind}  {anomaly.subject}: {anomaly.detail}")


def to_json(results: Sequence[Result]) -> str:
    """Every run as JSON (see ``Result.to_json``)."""
    return json.dumps({"runs": [r.to_json() for r in results]}, indent=2)


def chart(results: Sequence[Result], path: Path) -> Path:
    """A bar chart of lost and duplicated orders per guarantee and fault."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    labels = [f"{r.guarantee.value}\n{_faults(r)}" for r in results]
    lost = [len(r.findings.lost) for r in results]
    duplicated = [len(r.findings.duplicated) for r in results]
    positions = range(len(results))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(results)), 4.5))
    ax.bar([p - 0.2 for p in positions], lost, width=0.4, label="orders lost", color="#c0392b")
    ax.bar(
        [p + 0.2 for p in positions], duplicated, width=0.4, label="orders duplicated",
        color="#2980b9",
    )  # fmt: skip
    ax.set_xticks(list(positions), labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("orders")
    ax.set_title("onceflow verify: lost and duplicated orders per guarantee and fault")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(results: Sequence[Result], directory: Path) -> Path:
    """Write ``report.md``, ``lost-duplicated.png`` and a ``timeline-N.png`` per run
    (input and output rates, faults, first sends of lost and duplicated orders) into
    ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    image = chart(results, directory / "lost-duplicated.png")
    lines = [
        "# onceflow verify report",
        "",
        "At most once may lose but never duplicate; at least once may duplicate but never "
        "lose (its idempotent sink still applies each order once); exactly once does "
        "neither. Aborted reads, records visible before their commit, non-monotonic "
        "offsets, committed-offset regressions, fenced writes, order violations and "
        "wrong balances fail every guarantee.",
        "",
        f"![lost and duplicated orders]({image.name})",
        "",
        "| guarantee | faults | target | orders | lost | duplicated | balances ok | verdict |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for r in results:
        f = r.findings
        lines.append(
            f"| {r.guarantee.value} | {_faults(r)} | {r.target} | {f.orders} | {len(f.lost)} "
            f"| {len(f.duplicated)} | {_yes_no(f.balances_correct)} "
            f"| {r.outcome.value}{'' if r.ok else ': ' + r.summary()} |"
        )
    lines += ["", "## Anomalies per run", ""]
    lines.append("| run | " + " | ".join(KINDS) + " |")
    lines.append("|---|" + "---:|" * len(KINDS))
    for r in results:
        counts = r.findings.counts()
        lines.append(
            f"| {r.guarantee.value} / {_faults(r)} | "
            + " | ".join(str(counts[k]) for k in KINDS)
            + " |"
        )
    lines += ["", "## What each run did", ""]
    for index, r in enumerate(results, start=1):
        lines.append(f"### {r.guarantee.value} under {_faults(r)} ({r.seconds:.1f} s)")
        lines.append("")
        drawn = timeline(r, directory / f"timeline-{index}.png")
        if drawn is not None:
            lines += [f"![timeline of run {index}]({drawn.name})", ""]
        lines += [f"- {note}" for note in r.notes] or ["- no notes"]
        for anomaly in r.findings.anomalies[:5]:
            lines.append(f"- {anomaly.kind}: {anomaly.subject}: {anomaly.detail}")
        lines.append("")
    path = directory / "report.md"
    path.write_text("\n".join(lines))
    return path
