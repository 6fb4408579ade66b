"""Faults on the workload's connections, through the ``KafkaProxy`` (any target)."""

from __future__ import annotations

import time

from onceflow.guarantees import Guarantee
from onceflow.verify.faults.registry import Fault, FaultContext, register
from onceflow.verify.proxy import PRODUCE

CUT_SECONDS = 2.0
LOST_RESPONSES = 2


def _lose_produce_responses(ctx: FaultContext) -> str:
    # From the very next one: a client that batches hard (or a black-box program's last
    # chunk) may send only a couple of Produce requests after the fault is armed.
    ctx.proxy.lose_responses(PRODUCE, count=LOST_RESPONSES)
    return f"armed: the next {LOST_RESPONSES} Produce responses are lost"


def _no_response_lost(ctx: FaultContext) -> str | None:
    if ctx.proxy.stats[f"lost:{PRODUCE}"]:
        return None
    return "no Produce response was lost (too few Produce requests went through)"


def _cut_network(ctx: FaultContext) -> str:
    ctx.proxy.cut(CUT_SECONDS)
    time.sleep(CUT_SECONDS)  # the fault is the outage itself
    return f"every client connection cut for {CUT_SECONDS:.0f}s, then healed"


register(
    Fault(
        "lost-produce-response",
        "broker appended, acknowledgement lost; the client retries on a new connection",
        "produce",
        inject=_lose_produce_responses,
        missed=_no_response_lost,
        guarantees=frozenset({Guarantee.AT_LEAST_ONCE, Guarantee.EXACTLY_ONCE}),
        unfit="at most once produces with acks=0, so there is no acknowledgement to lose",
    )
)
register(
    Fault(
        "network-cut",
        f"all client connections cut for {CUT_SECONDS:.0f}s mid-stream, then healed",
        "live",
        inject=_cut_network,
    )
)
