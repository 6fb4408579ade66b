"""The pre-scan that bounds array counts walks every advertised request schema exactly
to its end, and refuses counts the frame cannot back."""

from __future__ import annotations

import io
import struct

import hypothesis.strategies as st
import pytest
from fuzz_cases import API_VERSIONS
from hypothesis import HealthCheck, given, settings
from kio.index import load_request_schema
from kio.serial import entity_writer
from wire import PRODUCE_VERSION, WireClient, values_batch

from onceflow.broker.frame_scan import BadFrame, check_body


def body(request: object) -> bytes:
    buffer = io.BytesIO()
    entity_writer(type(request))(buffer, request)
    return buffer.getvalue()


@st.composite
def a_request(draw: st.DrawFn) -> tuple[int, int, object]:
    api_key, version = draw(st.sampled_from(API_VERSIONS))
    return api_key, version, draw(st.from_type(load_request_schema(api_key, version)))


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(a_request(), st.binary(max_size=4))
def test_the_scan_ends_where_kio_wrote_the_last_byte(
    drawn: tuple[int, int, object], prefix: bytes
) -> None:
    api_key, version, request = drawn
    encoded = body(request)
    check_body(prefix + encoded, len(prefix), load_request_schema(api_key, version))
    # One byte short: a walk that stopped early would not notice.
    if encoded:
        with pytest.raises(BadFrame):
            check_body(prefix + encoded[:-1], len(prefix), load_request_schema(api_key, version))


def produce_body() -> tuple[bytes, int]:
    """A one-partition Produce body and the offset of its topic_data count."""
    request = WireClient.produce_request(None, "t", 0, values_batch([b"v"]))  # type: ignore[arg-type]
    encoded = body(request)
    # v9 is flexible: compact nullable transactional id (0x00 = null), acks, timeout.
    assert PRODUCE_VERSION >= 9 and encoded[0] == 0
    return encoded, 1 + 2 + 4


def test_a_count_larger_than_the_frame_is_refused() -> None:
    encoded, at = produce_body()
    schema = load_request_schema(0, PRODUCE_VERSION)
    check_body(encoded, 0, schema)
    claimed = bytearray(encoded)
    claimed[at] = 0x7F  # a compact count of 126 topics in a frame of a few dozen bytes
    with pytest.raises(BadFrame, match="count 126"):
        check_body(bytes(claimed), 0, schema)
    huge = encoded[:at] + b"\xff\xff\xff\xff\x07" + encoded[at + 1 :]
    with pytest.raises(BadFrame, match="count"):
        check_body(huge, 0, schema)
    endless = encoded[:at] + b"\xff" * 6 + encoded[at + 1 :]
    with pytest.raises(BadFrame, match="varint"):
        check_body(endless, 0, schema)


def test_a_non_flexible_int32_count_is_bounded_too() -> None:
    schema = load_request_schema(0, 8)
    request = WireClient.produce_request(None, "t", 0, values_batch([b"v"]), version=8)  # type: ignore[arg-type]
    encoded = body(request)
    check_body(encoded, 0, schema)
    at = 2 + 2 + 4  # null transactional id (int16 -1), acks, timeout
    claimed = encoded[:at] + struct.pack(">i", 2**31 - 1) + encoded[at + 4 :]
    with pytest.raises(BadFrame, match="count 2147483647"):
        check_body(claimed, 0, schema)
