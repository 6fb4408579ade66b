"""The one varint reader that the broker's frame scan, its record parsing and the
verifier's proxy share."""

from __future__ import annotations

import pytest

from onceflow.varint import VarintError, read_uvarint, read_varlong


def test_unsigned_varints_read_with_their_end_position() -> None:
    assert read_uvarint(b"\x00", 0) == (0, 1)
    assert read_uvarint(b"\xff\xac\x02", 1) == (300, 3)
    assert read_uvarint(b"\xff\xff\xff\xff\x0f", 0) == (2**32 - 1, 5)


def test_zig_zag_varlongs_alternate_sign() -> None:
    assert [read_varlong(bytes([b]), 0)[0] for b in range(5)] == [0, -1, 1, -2, 2]
    encoded = b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01"
    assert read_varlong(encoded, 0) == (2**63 - 1, 10)


def test_a_varint_longer_than_its_type_is_refused() -> None:
    with pytest.raises(VarintError):
        read_uvarint(b"\x80" * 5 + b"\x01", 0)
    with pytest.raises(VarintError):
        read_varlong(b"\x80" * 10 + b"\x01", 0)
    with pytest.raises(IndexError):
        read_uvarint(b"\x80\x80", 0)
