"""Kafka's variable-length integers, read from a buffer with their length bounded.

One reader for every place that walks Kafka bytes by hand: the broker's pre-scan of
request frames and its record parsing, and the verifier's proxy (which must not depend
on broker internals). The bound matters for untrusted input: an endless run of
continuation bits is refused instead of building an arbitrarily large integer.
"""

from __future__ import annotations

# Unsigned varints carry 32 bits (5 bytes), zig-zag varlongs 64 bits (10 bytes).
_MAX_SHIFT_32 = 28
_MAX_SHIFT_64 = 63


class VarintError(ValueError):
    """A varint longer than its type allows."""


def read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    """Unsigned varint at ``pos`` (at most 5 bytes): (value, next position)."""
    return _read(buf, pos, _MAX_SHIFT_32)


def read_varlong(buf: bytes, pos: int) -> tuple[int, int]:
    """Zig-zag varint or varlong at ``pos`` (at most 10 bytes): (value, next position)."""
    raw, pos = _read(buf, pos, _MAX_SHIFT_64)
    return (raw >> 1) ^ -(raw & 1), pos


def _read(buf: bytes, pos: int, max_shift: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > max_shift:
            raise VarintError(f"varint longer than {max_shift // 7 + 1} bytes at {pos}")
