"""``onceflow demo``: the pipeline under each guarantee on an embedded broker."""

from __future__ import annotations

from rich.console import Console

from onceflow.demo import run_demo
from onceflow.guarantees import Guarantee


def test_demo_charges_every_order_once_under_each_guarantee() -> None:
    console = Console(record=True, width=120)
    assert run_demo(300, console) == 0
    cells = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in console.export_text().splitlines()
        if line.startswith("│")
    ]
    # guarantee, orders sent, payments emitted, distinct payments, balances correct
    assert [row[:5] for row in cells] == [[g.value, "300", "300", "300", "yes"] for g in Guarantee]
