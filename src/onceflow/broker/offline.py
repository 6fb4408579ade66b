"""Refusing changes to the data dir while it is offline.

After a failed sync or write the data dir is offline until restart (fail-stop, see
``log/flusher.py``). Produce, Fetch and the coordinators already answer
KAFKA_STORAGE_ERROR (or COORDINATOR_NOT_AVAILABLE); the admin APIs that change what is
on disk (topics, partitions, configs, log start offsets, ACLs, SCRAM users) go through
``storage_write`` so that none of them is acknowledged while nothing can be made
durable. Read-only APIs that need no disk keep answering.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping
from typing import Any, TypeVar

from kio.schema.errors import ErrorCode

from onceflow.broker.durable import when_settled

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


class StorageRefused(Exception):
    """A change refused because the data dir is (or has just gone) offline."""

    code = ErrorCode.kafka_storage_error


def check_writable(broker: Any) -> None:
    """Raise StorageRefused if the data dir is offline."""
    if broker.storage_error is not None:
        raise StorageRefused(str(broker.storage_error))


@contextlib.contextmanager
def storage_write(broker: Any) -> Iterator[None]:
    """Guard a change to the data dir: refused at once while it is offline, and a write
    or sync that fails inside takes it offline (logged once) and is refused too, rather
    than closing the client's connection."""
    check_writable(broker)
    try:
        yield
    except OSError as exc:
        raise failed_write(broker, exc) from exc


def failed_write(broker: Any, exc: OSError) -> StorageRefused:
    """A write or sync (on the loop or off it) failed: the data dir goes offline
    (logged once); returns the refusal to answer with."""
    broker.flusher.fail(exc)
    return StorageRefused(str(broker.storage_error))


def refusals(broker: Any, outcomes: Mapping[K, Any]) -> dict[K, StorageRefused]:
    """Of the outcomes of writes done off the loop (see ``durable.when_settled``), the
    ones that failed, each as the refusal to answer with (the data dir goes offline)."""
    return {
        key: failed_write(broker, outcome)
        for key, outcome in outcomes.items()
        if isinstance(outcome, OSError)
    }


def answer_when_written(
    broker: Any,
    results: list[list[Any]],
    writes: dict[int, Awaitable[Any]],
    respond: Callable[[], R],
) -> R | Awaitable[R]:
    """``respond()`` once every write has settled. ``results`` are the items answered,
    each a list ending in (error code, message); ``writes`` maps the index of an item
    to its write off the loop, and a write that failed makes its item's error the
    storage refusal."""

    def settled(outcomes: dict[int, Any]) -> R:
        for slot, refused in refusals(broker, outcomes).items():
            results[slot][-2:] = refused.code, str(refused)
        return respond()

    return when_settled(writes, settled)
