"""Delivery guarantees as data: the client settings each one needs, and why.

``producer_settings(g)`` and ``consumer_settings(g)`` return the settings that make
``g`` hold, each with a one-line reason. ``producer_config`` / ``consumer_config``
merge them with user overrides and refuse overrides that would silently weaken the
guarantee (``acks=0`` under exactly-once, auto-commit under at-least-once, ...).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Guarantee(Enum):
    """How many times each input record's effects may happen."""

    AT_MOST_ONCE = "at-most-once"
    AT_LEAST_ONCE = "at-least-once"
    EXACTLY_ONCE = "exactly-once"

    @classmethod
    def parse(cls, text: str) -> Guarantee:
        """Accept ``exactly-once``, ``exactly_once``, ``EXACTLY_ONCE``, ``eos``..."""
        norm = text.strip().lower().replace("_", "-")
        aliases = {"amo": "at-most-once", "alo": "at-least-once", "eos": "exactly-once"}
        norm = aliases.get(norm, norm)
        for member in cls:
            if member.value == norm:
                return member
        choices = ", ".join(m.value for m in cls)
        raise ValueError(f"unknown guarantee {text!r}; choose one of {choices}")


@dataclass(frozen=True)
class Setting:
    """One client setting a guarantee needs.

    ``required`` settings may not be overridden with a different value; the others
    are sensible defaults a user may change freely.
    """

    key: str
    value: Any
    reason: str
    required: bool = True


class GuaranteeConfigError(ValueError):
    """A user override contradicts the chosen guarantee."""


# Placeholder for settings whose value only the caller knows (e.g. transactional.id).
PER_RUNNER = "<per runner>"

_PRODUCER: dict[Guarantee, tuple[Setting, ...]] = {
    Guarantee.AT_MOST_ONCE: (
        Setting(
            "acks",
            "0",
            "logs and metrics: send without waiting for an ack; a lost record is allowed",
            False,
        ),
        Setting("enable.idempotence", False, "no retries, so no duplicates to remove", False),
        Setting("retries", 0, "a retry could write a record twice", True),
    ),
    Guarantee.AT_LEAST_ONCE: (
        Setting("acks", "all", "a record counts as sent only once it is durable"),
        Setting("enable.idempotence", True, "retries must not duplicate within a session", False),
        Setting("retries", 2147483647, "retry transient errors instead of dropping records"),
    ),
    Guarantee.EXACTLY_ONCE: (
        Setting("acks", "all", "transactions need every write to be durable"),
        Setting("enable.idempotence", True, "transactions are built on idempotent sequences"),
        Setting("retries", 2147483647, "retry transient errors inside the transaction"),
        Setting(
            "transactional.id",
            PER_RUNNER,
            "one stable id per runner fences its zombie after a restart",
        ),
        Setting(
            "transaction.timeout.ms",
            60000,
            "the broker aborts a transaction left open by a dead process",
            False,
        ),
    ),
}

_CONSUMER: dict[Guarantee, tuple[Setting, ...]] = {
    Guarantee.AT_MOST_ONCE: (
        Setting("enable.auto.commit", False, "the runner commits before processing, in order"),
        Setting("isolation.level", "read_committed", "never act on aborted records", False),
        Setting("auto.offset.reset", "earliest", "a new group starts at the beginning", False),
    ),
    Guarantee.AT_LEAST_ONCE: (
        Setting(
            "enable.auto.commit",
            False,
            "auto-commit can commit records that were polled but not yet processed",
        ),
        Setting(
            "enable.auto.offset.store",
            False,
            "only processed records may have their offsets stored",
        ),
        Setting("isolation.level", "read_committed", "never act on aborted records", False),
        Setting("auto.offset.reset", "earliest", "a new group starts at the beginning", False),
    ),
    Guarantee.EXACTLY_ONCE: (
        Setting(
            "enable.auto.commit",
            False,
            "offsets are committed inside the producer's transaction",
        ),
        Setting(
            "isolation.level",
            "read_committed",
            "records of aborted or open transactions must not be processed",
        ),
        Setting("auto.offset.reset", "earliest", "a new group starts at the beginning", False),
    ),
}


def producer_settings(guarantee: Guarantee) -> tuple[Setting, ...]:
    """The producer settings ``guarantee`` needs, with reasons."""
    return _PRODUCER[guarantee]


def consumer_settings(guarantee: Guarantee) -> tuple[Setting, ...]:
    """The consumer settings ``guarantee`` needs, with reasons."""
    return _CONSUMER[guarantee]


# librdkafka's other names for the settings the guarantees check: its aliases, and the
# legacy topic-level auto.commit.enable (refusing it like enable.auto.commit is the
# safe reading). A "topic." prefix names the same topic-level property.
_ALIASES = {
    "request.required.acks": "acks",
    "message.send.max.retries": "retries",
    "auto.commit.enable": "enable.auto.commit",
}
_TOPIC_PREFIX = "topic."
_LEADING_INT = re.compile(r"\s*[-+]?\d+")
_BOOLS = {"true": True, "t": True, "1": True, "false": False, "f": False, "0": False}
_OFFSET_RESETS = {
    "smallest": "earliest", "earliest": "earliest", "beginning": "earliest",
    "largest": "latest", "latest": "latest", "end": "latest", "error": "error",
}  # fmt: skip


def canonical_key(key: str) -> str:
    """The name onceflow uses for a librdkafka setting spelled ``key``."""
    key = key.removeprefix(_TOPIC_PREFIX)
    return _ALIASES.get(key, key)


def _as_bool(value: Any) -> Any:
    return _BOOLS.get(str(value).strip().lower(), value)


def _as_int(value: Any) -> Any:
    """librdkafka reads integers with strtol: leading digits count, the rest is ignored."""
    if isinstance(value, bool):
        return value
    match = _LEADING_INT.match(str(value))
    return int(match.group()) if match else value


def _as_acks(value: Any) -> Any:
    return -1 if str(value).strip().lower() == "all" else _as_int(value)


def _as_word(value: Any) -> Any:
    return str(value).strip().lower()


_MEANING: dict[str, Callable[[Any], Any]] = {
    "acks": _as_acks,
    "retries": _as_int,
    "enable.idempotence": _as_bool,
    "enable.auto.commit": _as_bool,
    "enable.auto.offset.store": _as_bool,
    "isolation.level": _as_word,
    "auto.offset.reset": lambda v: _OFFSET_RESETS.get(_as_word(v), v),
    "transaction.timeout.ms": _as_int,
}


def meaning(key: str, value: Any) -> Any:
    """What librdkafka makes of ``key=value``: ``acks=-1`` and ``acks="all"`` mean the
    same, so do ``retries=5`` and ``retries="5"``, ``False`` and ``"false"``."""
    return _MEANING.get(canonical_key(key), str)(value)


def _flatten(overrides: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Overrides as (canonical key, value), with ``default.topic.config``'s entries
    (confluent-kafka's nested topic settings) taken out of it."""
    flat: list[tuple[str, Any]] = []
    for key, value in overrides.items():
        if key == "default.topic.config" and isinstance(value, Mapping):
            flat += [(canonical_key(k), v) for k, v in value.items()]
        else:
            flat.append((canonical_key(key), value))
    return flat


def _merge(
    guarantee: Guarantee,
    role: str,
    settings: tuple[Setting, ...],
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    config = {s.key: s.value for s in settings if s.value != PER_RUNNER}
    by_key = {s.key: s for s in settings}
    given: dict[str, Any] = {}
    for key, value in _flatten(overrides):
        if key in given and meaning(key, given[key]) != meaning(key, value):
            raise GuaranteeConfigError(
                f"{role} setting {key} is given twice (under two of its names) with "
                f"different values: {given[key]!r} and {value!r}"
            )
        given[key] = value
        setting = by_key.get(key)
        required = setting is not None and setting.required and key in config
        if required and meaning(key, config[key]) != meaning(key, value):
            assert setting is not None
            raise GuaranteeConfigError(
                f"{role} setting {key}={value!r} conflicts with {guarantee.value}: it "
                f"needs {key}={config[key]!r} because {setting.reason}"
            )
        config[key] = value
    return config


def producer_config(
    guarantee: Guarantee,
    overrides: Mapping[str, Any] | None = None,
    *,
    transactional_id: str | None = None,
) -> dict[str, Any]:
    """Producer settings for ``guarantee`` merged with ``overrides``.

    Raises ``GuaranteeConfigError`` if an override contradicts a required setting.
    """
    overrides = dict(overrides or {})
    given_tid = dict(_flatten(overrides)).get("transactional.id")
    if guarantee is Guarantee.EXACTLY_ONCE:
        tid = transactional_id or given_tid
        if not tid:
            raise GuaranteeConfigError(
                "exactly-once needs a transactional.id: one stable id per runner"
            )
        if given_tid is None:
            overrides["transactional.id"] = tid
        return _merge(guarantee, "producer", _PRODUCER[guarantee], overrides)
    if given_tid:
        raise GuaranteeConfigError(
            f"producer setting transactional.id is only meaningful with exactly-once, "
            f"not {guarantee.value}"
        )
    return _merge(guarantee, "producer", _PRODUCER[guarantee], overrides)


def consumer_config(
    guarantee: Guarantee, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Consumer settings for ``guarantee`` merged with ``overrides``.

    Raises ``GuaranteeConfigError`` if an override contradicts a required setting.
    """
    return _merge(guarantee, "consumer", _CONSUMER[guarantee], dict(overrides or {}))


def settings_table(guarantee: Guarantee) -> list[dict[str, Any]]:
    """Every setting of ``guarantee`` as plain rows (for ``onceflow config --json``)."""
    rows: list[dict[str, Any]] = []
    for role, settings in (("producer", _PRODUCER), ("consumer", _CONSUMER)):
        for s in settings[guarantee]:
            rows.append(
                {
                    "client": role,
                    "key": s.key,
                    "value": s.value,
                    "required": s.required,
                    "reason": s.reason,
                }
            )
    return rows
