"""A pre-scan of a request body that bounds every array count by the bytes left.

kio's native decoder reserves memory for an array's elements from its declared count
before reading them: a 60-byte frame claiming two billion elements makes it allocate
over 100 GB, and a failed allocation aborts the whole broker process (found by the
protocol fuzzer). This walk reads only lengths and counts, following the request's
schema, and refuses a count that could not fit in the rest of the frame (every element
takes at least one byte), so kio only ever sees counts the frame can back.
"""

from __future__ import annotations

import dataclasses
import struct
import types
import typing
from collections.abc import Callable
from functools import cache
from typing import Any

from onceflow.varint import VarintError, read_uvarint

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_FIXED_SIZES = {
    "bool": 1,
    "int8": 1,
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "timedelta_i32": 4,
    "int64": 8,
    "timedelta_i64": 8,
    "float64": 8,
    "uuid": 16,
}

# (buffer, position) -> position after the field.
Step = Callable[[bytes, int], int]


class BadFrame(Exception):
    """A length or count that the frame cannot back."""


def check_body(frame: bytes, offset: int, schema: type) -> None:
    """Raise BadFrame if some count or length in the body at ``offset`` is impossible."""
    try:
        end = _scanner(schema)(frame, offset)
    except (struct.error, IndexError) as exc:
        raise BadFrame(f"request body ends early: {exc}") from exc
    except VarintError as exc:
        raise BadFrame(str(exc)) from exc
    if end > len(frame):
        raise BadFrame("request body ends early")


def _count(buf: bytes, pos: int, flexible: bool) -> tuple[int, int]:
    """(element count or -1 for null, position after the count)."""
    if flexible:
        raw, pos = read_uvarint(buf, pos)
        count = raw - 1
    else:
        (count,) = _INT32.unpack_from(buf, pos)
        pos += 4
    if count < -1 or count > len(buf) - pos:
        raise BadFrame(f"count {count} with {len(buf) - pos} bytes left")
    return count, pos


def _sized(wide: bool, flexible: bool) -> Step:
    """A string (int16 length) or bytes (int32 length), compact when flexible."""

    def step(buf: bytes, pos: int) -> int:
        if flexible:
            size, pos = _count(buf, pos, True)
        elif wide:
            size, pos = _count(buf, pos, False)
        else:
            (size,) = _INT16.unpack_from(buf, pos)
            pos += 2
        return pos + max(size, 0)

    return step


def _primitive(kafka_type: str, flexible: bool) -> Step:
    if kafka_type in _FIXED_SIZES:
        size = _FIXED_SIZES[kafka_type]
        return lambda buf, pos: pos + size
    return _sized(kafka_type != "string", flexible)


def _array(item: Step, flexible: bool) -> Step:
    def step(buf: bytes, pos: int) -> int:
        count, pos = _count(buf, pos, flexible)
        for _ in range(count):
            pos = item(buf, pos)
        return pos

    return step


def _skip_tagged(buf: bytes, pos: int) -> int:
    # Tagged fields carry their own sizes; kio bounds their contents by them.
    count, pos = read_uvarint(buf, pos)
    for _ in range(count):
        _, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        pos += size
    return pos


@cache
def _scanner(cls: type) -> Step:
    flexible: bool = cls.__flexible__
    hints = typing.get_type_hints(cls)
    steps: list[Step] = []
    for field in dataclasses.fields(cls):
        if "tag" in field.metadata:
            continue
        hint = hints[field.name]
        if isinstance(hint, types.UnionType):
            (hint,) = (a for a in typing.get_args(hint) if a is not type(None))
        is_array = typing.get_origin(hint) is tuple
        item = typing.get_args(hint)[0] if is_array else hint
        if dataclasses.is_dataclass(item):
            inner = _deferred(item)
        else:
            inner = _primitive(field.metadata["kafka_type"], flexible)
        steps.append(_array(inner, flexible) if is_array else inner)

    def scan(buf: bytes, pos: int) -> int:
        for step in steps:
            pos = step(buf, pos)
        return _skip_tagged(buf, pos) if flexible else pos

    return scan


def _deferred(cls: Any) -> Step:
    """The scanner of a nested entity, built on first use (schemas nest, never cycle)."""
    return lambda buf, pos: _scanner(cls)(buf, pos)
