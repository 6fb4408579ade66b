"""What every handler may assume of a decoded request: no null where the schema has none.

kio decodes a length of -1 as None for any array, string or bytes field, nullable in
Kafka's schema or not. Kafka's own parser refuses a null in a non-nullable field (the
request is invalid and the connection is closed); this check does the same, once, for
every API, so handlers can iterate arrays and read strings without guarding each one.
A field the schema declares nullable (``X | None`` in kio's types) stays the handler's
to interpret.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import cache
from typing import Any

from onceflow.broker.frame_scan import FIXED_SIZES


class NullViolation(Exception):
    """A null where the request's schema does not allow one."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    name: str
    nullable: bool
    #: The entity class of a nested struct or of an array's items, if any.
    child: type | None
    is_array: bool


def _split(hint: Any) -> tuple[bool, Any]:
    """(nullable, the type without None)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return len(args) < len(typing.get_args(hint)), args[0]
    return False, hint


@cache
def _fields(cls: type) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls)
    shape = []
    for field in dataclasses.fields(cls):
        nullable, hint = _split(hints[field.name])
        is_array = typing.get_origin(hint) is tuple
        item = typing.get_args(hint)[0] if is_array else hint
        child = item if dataclasses.is_dataclass(item) else None
        fixed = not is_array and field.metadata.get("kafka_type") in FIXED_SIZES
        if child is None and (nullable or fixed):
            continue  # any value is fine: a nullable leaf, or a fixed-size one kio never nulls
        shape.append(_Field(field.name, nullable, child, is_array))
    return tuple(shape)


def check_nulls(entity: Any) -> None:
    """Raise NullViolation naming the first non-nullable field that holds None."""
    for field in _fields(type(entity)):
        value = getattr(entity, field.name)
        if value is None:
            if not field.nullable:
                raise NullViolation(f"{type(entity).__name__}.{field.name} is null")
            continue
        if field.child is None:
            continue
        for item in value if field.is_array else (value,):
            if item is None:
                raise NullViolation(f"{type(entity).__name__}.{field.name} holds a null")
            check_nulls(item)
