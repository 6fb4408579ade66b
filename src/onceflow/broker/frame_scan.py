"""A pre-scan of a request body that bounds every array count by the bytes left.

kio's native decoder reserves memory for an array's elements from its declared count
before reading them: a 60-byte frame claiming two billion elements makes it allocate
over 100 GB, and a failed allocation aborts the whole broker process (found by the
protocol fuzzer). This walk reads only lengths and counts, following the request's
schema, and refuses a count that could not fit in the rest of the frame (every element
takes at least one byte), so kio only ever sees counts the frame can back.

Every request passes through it, Produce included, so each schema's walk is generated
once as one Python function (nested loops for nested arrays, runs of fixed-size fields
skipped in one move): a chain of small closures cost several times kio's own decode.
"""

from __future__ import annotations

import dataclasses
import struct
import types
import typing
from collections.abc import Callable
from functools import cache

from onceflow.varint import VarintError, read_uvarint

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
#: Bytes on the wire of each fixed-size Kafka type.
FIXED_SIZES = {
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

# (buffer, position) -> position after the body.
Scan = Callable[[bytes, int], int]


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


def _bounded(count: int, buf: bytes, pos: int) -> tuple[int, int]:
    if count < -1 or count > len(buf) - pos:
        raise BadFrame(f"count {count} with {len(buf) - pos} bytes left")
    return count, pos


def _count_compact(buf: bytes, pos: int) -> tuple[int, int]:
    """(element count or -1 for null, position after it) of a compact (varint + 1) count."""
    byte = buf[pos]
    if byte < 0x80:  # a one-byte varint: nearly always
        return _bounded(byte - 1, buf, pos + 1)
    raw, pos = read_uvarint(buf, pos)
    return _bounded(raw - 1, buf, pos)


def _count_int32(buf: bytes, pos: int) -> tuple[int, int]:
    """(element count or -1 for null, position after it) of an int32 count."""
    return _bounded(_INT32.unpack_from(buf, pos)[0], buf, pos + 4)


def _skip_tagged(buf: bytes, pos: int) -> int:
    # Tagged fields carry their own sizes; kio bounds their contents by them.
    count, pos = read_uvarint(buf, pos)
    for _ in range(count):
        _, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        pos += size
    return pos


_NAMESPACE = {
    "count_compact": _count_compact,
    "count_int32": _count_int32,
    "int16": _INT16.unpack_from,
    "skip_tagged": _skip_tagged,
}


@cache
def _scanner(cls: type) -> Scan:
    lines = ["def scan(buf, pos):"]
    _emit(cls, lines, 1)
    lines.append("    return pos")
    namespace = dict(_NAMESPACE)
    exec(compile("\n".join(lines), f"<frame scan of {cls.__name__}>", "exec"), namespace)
    scan: Scan = namespace["scan"]
    return scan


def _emit(cls: type, lines: list[str], depth: int) -> None:
    """Append the statements that move ``pos`` past one ``cls`` entity."""
    pad = "    " * depth
    flexible: bool = cls.__flexible__
    count = "count_compact" if flexible else "count_int32"
    hints = typing.get_type_hints(cls)
    fixed = 0  # bytes of fixed-size fields not yet skipped
    for field in dataclasses.fields(cls):
        if "tag" in field.metadata:
            continue
        hint = hints[field.name]
        if isinstance(hint, types.UnionType):
            (hint,) = (a for a in typing.get_args(hint) if a is not type(None))
        is_array = typing.get_origin(hint) is tuple
        item = typing.get_args(hint)[0] if is_array else hint
        kafka_type = None if dataclasses.is_dataclass(item) else field.metadata["kafka_type"]
        size = FIXED_SIZES.get(kafka_type) if kafka_type else None
        if size is not None and not is_array:
            fixed += size
            continue
        if fixed:
            lines.append(f"{pad}pos += {fixed}")
            fixed = 0
        if not is_array:
            if kafka_type is None:
                _emit(item, lines, depth)
            else:
                _emit_sized(kafka_type, flexible, lines, pad)
            continue
        n = f"n{depth}"
        lines.append(f"{pad}{n}, pos = {count}(buf, pos)")
        if size is not None:
            lines.append(f"{pad}if {n} > 0:")
            lines.append(f"{pad}    pos += {n} * {size}")
            continue
        lines.append(f"{pad}for _ in range({n}):")
        if kafka_type is None:
            _emit(item, lines, depth + 1)
        else:
            _emit_sized(kafka_type, flexible, lines, pad + "    ")
    if fixed:
        lines.append(f"{pad}pos += {fixed}")
    if flexible:  # an empty tagged-field section is one zero byte
        lines.append(f"{pad}pos = pos + 1 if buf[pos] == 0 else skip_tagged(buf, pos)")
    elif lines[-1].endswith(":"):  # an item with nothing to skip
        lines.append(f"{pad}pass")


def _emit_sized(kafka_type: str, flexible: bool, lines: list[str], pad: str) -> None:
    """A string (int16 length) or bytes (int32 length), compact when flexible."""
    if flexible or kafka_type != "string":
        count = "count_compact" if flexible else "count_int32"
        lines.append(f"{pad}size, pos = {count}(buf, pos)")
        lines.append(f"{pad}if size > 0:")
        lines.append(f"{pad}    pos += size")
    else:
        lines.append(f"{pad}(size,) = int16(buf, pos)")
        lines.append(f"{pad}pos += 2 + (size if size > 0 else 0)")
