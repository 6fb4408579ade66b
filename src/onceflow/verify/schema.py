"""What a well-formed history event looks like, so the checker can set aside what it
cannot interpret (a torn write, a foreign record, a broker that answers nonsense)
instead of crashing on it.

``problem(event)`` returns None for an event the checks can rely on, or a sentence
saying what is wrong with it. The field list mirrors the table in ``history``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _maybe_text(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _maybe_integer(value: Any) -> bool:
    # A delivery report may carry no offset (librdkafka's OFFSET_INVALID shows as None).
    return value is None or _integer(value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


def _rows(*columns: Check) -> Check:
    def rows(value: Any) -> bool:
        return isinstance(value, list) and all(
            isinstance(row, list)
            and len(row) == len(columns)
            and all(ok(cell) for ok, cell in zip(columns, row, strict=True))
            for row in value
        )

    return rows


def _mapping(key: Check, item: Check) -> Check:
    def mapping(value: Any) -> bool:
        return isinstance(value, dict) and all(key(k) and item(v) for k, v in value.items())

    return mapping


def _texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


_PARTITIONS = _rows(_text, _integer)
_OFFSETS = _rows(_text, _integer, _integer)
# order id -> [customer, amount]
_ORDERS = _mapping(_text, lambda v: _rows(_text, _integer)([v]))

COMMON: dict[str, Check] = {"t": _number, "pid": _integer, "proc": _text, "type": _text}

FIELDS: dict[str, dict[str, Check]] = {
    "intent": {"orders": _ORDERS, "input_topic": _maybe_text, "output_topic": _maybe_text},
    "send": {
        "topic": _text, "id": _text, "value_id": _maybe_text, "key": _maybe_text,
        "txn": _maybe_text,
    },
    "ack": {"id": _text, "topic": _text, "partition": _integer, "offset": _maybe_integer},
    "ack_error": {"id": _text},
    "txn_init": {"tid": _text, "instance": _text},
    "txn_begin": {"tid": _maybe_text, "instance": _text, "txn": _text},
    "txn_offsets": {"txn": _maybe_text, "group": _maybe_text, "offsets": _OFFSETS},
    "txn_commit_start": {"txn": _maybe_text},
    "txn_commit": {"txn": _maybe_text},
    "txn_abort": {"txn": _maybe_text},
    "assign": {"partitions": _PARTITIONS},
    "revoke": {"partitions": _PARTITIONS},
    "seek": {"topic": _text, "partition": _integer, "offset": _integer},
    "poll": {
        "isolation": _text, "topic": _text, "partition": _integer, "offset": _integer,
        "id": _maybe_text, "value_id": _maybe_text, "key": _maybe_text,
    },
    "process": {"topic": _text, "partition": _integer, "offset": _integer},
    "sink_write": {"key": _text, "inserted": _flag},
    "sink_commit": {"keys": _texts, "group": _maybe_text, "offsets": _OFFSETS},
    "sink_rollback": {},
    "commit": {"group": _maybe_text, "offsets": _OFFSETS},
    "fault": {"name": _text, "detail": _text},
    "final_read": {
        "isolation": _text, "topic": _text,
        "records": _rows(_integer, _integer, _maybe_text, _maybe_text, _maybe_text),
    },
    "db_state": {
        "ledger": _mapping(_text, _integer), "balances": _mapping(_text, _integer),
    },
}  # fmt: skip


def problem(event: Any) -> str | None:
    """None if the checks can rely on ``event``; otherwise what is wrong with it."""
    if not isinstance(event, dict):
        return f"not an event object: {type(event).__name__}"
    for name, ok in COMMON.items():
        if not ok(event.get(name)):
            return f"field {name!r} is missing or malformed: {event.get(name)!r:.60}"
    fields = FIELDS.get(event["type"])
    if fields is None:
        return f"unknown event type {event['type']!r:.60}"
    for name, ok in fields.items():
        if not ok(event.get(name)):
            return (
                f"{event['type']} field {name!r} is missing or malformed: {event.get(name)!r:.60}"
            )
    return None
