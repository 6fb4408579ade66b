"""Faults on the broker process itself (only the embedded broker the verifier runs)."""

from __future__ import annotations

import time

from onceflow.verify.faults.registry import Capability, Fault, FaultContext, register

BROKER_DOWN_SECONDS = 1.0


def _kill_broker(ctx: FaultContext) -> str:
    assert ctx.broker is not None, "broker-kill needs the embedded broker"
    pid = ctx.broker.pid
    ctx.broker.kill()
    time.sleep(BROKER_DOWN_SECONDS)  # the fault is the outage itself
    ctx.broker.start()
    return f"broker pid {pid} killed with SIGKILL, restarted after {BROKER_DOWN_SECONDS:.0f}s"


register(
    Fault(
        "broker-kill",
        "broker killed with SIGKILL mid-stream, restarted on the same data",
        "live",
        requires=frozenset({Capability.CLIENTS, Capability.BROKER_PROCESS}),
        inject=_kill_broker,
    )
)
