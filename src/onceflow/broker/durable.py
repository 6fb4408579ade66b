"""Answers that wait for durability: the one shape every handler returns.

A handler returns its response, or an awaitable of it when something it did must be
durable first (an fsync round of the group flusher). These two functions build that
value-or-awaitable, so that no handler writes its own ``async def`` around a gather.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K", bound=Hashable)


def then(outcome: T | Awaitable[T], respond: Callable[[T], R]) -> R | Awaitable[R]:
    """``respond(outcome)`` now, or once ``outcome`` (an awaitable) resolves; an
    exception it raises propagates."""
    if not inspect.isawaitable(outcome):
        return respond(outcome)

    async def later() -> R:
        return respond(await outcome)

    return later()


def when_settled(
    waits: Mapping[K, Awaitable[Any] | None],
    respond: Callable[[dict[K, Any]], R],
    expected: tuple[type[BaseException], ...] = (OSError,),
) -> R | Awaitable[R]:
    """``respond(outcomes)`` now when nothing waits, else once every awaitable has
    settled. ``outcomes`` maps the key of each awaitable (None ones are left out) to
    its result, or to the exception it raised if that is one of ``expected`` (by
    default storage failures): each caller decides what such a failure answers. Any
    other exception propagates, as a handler's own failure does."""
    pending = {key: wait for key, wait in waits.items() if wait is not None}
    if not pending:
        return respond({})

    def settled(results: list[Any]) -> R:
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, expected):
                raise result
        return respond(dict(zip(pending, results, strict=True)))

    if len(pending) == 1:
        # The usual case (one partition, one record): awaited directly, without a
        # gather, whose own callback would cost the answer one more loop iteration.
        return _settle_one(next(iter(pending.values())), settled)
    return then(asyncio.gather(*pending.values(), return_exceptions=True), settled)


async def _settle_one(wait: Awaitable[Any], settled: Callable[[list[Any]], R]) -> R:
    """``settled([outcome])`` once ``wait`` settles, as gather's return_exceptions has it."""
    try:
        outcome = await wait
    except Exception as exc:
        outcome = exc
    return settled([outcome])
