"""The timeline chart of one run: per-second input and output rates, each injected
fault marked, and where the lost and duplicated orders were first produced."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from onceflow.verify.history import Event
from onceflow.verify.run import Result


def _series(history: list[Event], start: float, topic: str | None) -> list[int]:
    per_second: Counter[int] = Counter(
        int(e["t"] - start) for e in history if e["type"] == "send" and e.get("topic") == topic
    )
    return [per_second[s] for s in range(max(per_second, default=0) + 1)]


def timeline(result: Result, path: Path) -> Path | None:
    """Draw ``result``'s timeline into ``path``; None when the run kept no history
    (black-box runs record none)."""
    history = [e for e in result.history if isinstance(e.get("t"), int | float)]
    intent = next((e for e in history if e["type"] == "intent"), None)
    if intent is None:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    start = min(e["t"] for e in history)
    fig, ax = plt.subplots(figsize=(8.0, 3.5))
    for topic, label in ((intent.get("input_topic"), "orders in"),
                         (intent.get("output_topic"), "payments out")):  # fmt: skip
        rates = _series(history, start, topic)
        if rates:
            ax.step(range(len(rates)), rates, where="post", label=f"{label} / s")
    for fault in (e for e in history if e["type"] == "fault"):
        ax.axvline(fault["t"] - start, color="#888888", linestyle=":", linewidth=1)
        ax.annotate(fault["name"], (fault["t"] - start, 0), rotation=90, fontsize=6,
                    va="bottom", color="#555555")  # fmt: skip
    sends: dict[tuple[str | None, str | None], list[float]] = {}
    for e in history:
        if e["type"] == "send":
            sends.setdefault((e.get("topic"), e.get("value_id")), []).append(e["t"] - start)
    lost = [sends[(intent.get("input_topic"), o)][0] for o in result.findings.lost
            if (intent.get("input_topic"), o) in sends]  # fmt: skip
    again = [sorted(times)[1] for (topic, _), times in sends.items()
             if topic == intent.get("output_topic") and len(times) > 1]  # fmt: skip
    top = max(ax.get_ylim()[1], 1.0)
    if lost:
        ax.plot(lost, [top * 0.95] * len(lost), "v", color="#c0392b", label="lost order sent")
    if again:
        ax.plot(again, [top * 0.9] * len(again), "x", color="#2980b9",
                label="payment sent again")  # fmt: skip
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel("records per second")
    ax.set_title(f"{result.guarantee.value} under {', '.join(result.faults) or 'no fault'}",
                 fontsize=9)  # fmt: skip
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
