"""Hypothesis strategies for the protocol fuzzer: valid kio-encoded requests of every
advertised API and version (kio registers strategies for its field types), mutated at the
byte level, plus garbage record batches with valid CRCs and plain random frames."""

from __future__ import annotations

import datetime
import io
import struct
from functools import cache
from typing import Any

import hypothesis.strategies as st
from kio.index import load_request_schema
from kio.serial import entity_writer
from kio.static.primitive import Records, i32Timedelta
from wire import CLIENT_ID, build_batch, fix_crc

from onceflow.broker.apis import API_TABLE
from onceflow.broker.protocol import build
from onceflow.broker.records import HEADER_SIZE, LOG_OVERHEAD

_SIZE = struct.Struct(">i")
_HEADER_V1_PREFIX = struct.Struct(">hhih")
#: Values at the limits of the integer types, and the ones protocols treat specially.
_LIMITS = (0, 1, -1, 0x7F, 0x80, 0x7FFF, 0x8000, 0x7FFFFFFF, -0x80000000, 0xFFFFFFFF)
_WIDTHS = {1: ">B", 2: ">H", 4: ">I", 8: ">Q"}

API_VERSIONS = [
    (api.key, version)
    for api in API_TABLE.values()
    for version in range(api.min_version, api.max_version + 1)
]


# -- record batches --------------------------------------------------------------------


def _garbage_batch(body: bytes, attributes: int, count: int, length_delta: int) -> bytes:
    """A batch whose header is plausible and whose CRC is right, around any body."""
    batch = bytearray(
        build_batch([(None, b"x")], producer_id=-1, producer_epoch=-1, base_sequence=-1)
    )
    batch = batch[:HEADER_SIZE] + bytearray(body)
    struct.pack_into(">i", batch, 8, len(batch) - LOG_OVERHEAD + length_delta)
    struct.pack_into(">h", batch, 21, attributes)
    struct.pack_into(">I", batch, 57, count & 0xFFFFFFFF)
    fix_crc(batch)
    return bytes(batch)


_records = st.one_of(
    st.lists(st.tuples(st.none() | st.binary(max_size=20), st.binary(max_size=40)), min_size=1)
    .map(build_batch)
    .map(Records),
    st.builds(
        _garbage_batch,
        st.binary(max_size=200),
        st.integers(-(2**15), 2**15 - 1),
        st.sampled_from(_LIMITS) | st.integers(-10, 1000),
        st.sampled_from((0, 0, 0, -1, 1, 2**20, -(2**20))),
    ).map(Records),
    st.binary(max_size=100).map(Records),
)
st.register_type_strategy(Records, _records)
# Waits (Fetch max_wait, session and rebalance timeouts) stay short: a case that parks
# for minutes tests nothing and stalls the run; byte mutations still reach the limits.
st.register_type_strategy(
    i32Timedelta,
    st.integers(0, 200).map(lambda ms: i32Timedelta.parse(datetime.timedelta(milliseconds=ms))),
)


# -- frames ----------------------------------------------------------------------------


@cache
def _writer(api_key: int, version: int) -> tuple[type, Any, Any]:
    schema = load_request_schema(api_key, version)
    header = schema.__header_schema__
    return schema, entity_writer(header), entity_writer(schema)


def encode(api_key: int, version: int, request: Any, correlation_id: int = 0) -> bytes:
    schema, write_header, write_body = _writer(api_key, version)
    header = build(
        schema.__header_schema__,
        request_api_key=api_key,
        request_api_version=version,
        correlation_id=correlation_id,
        client_id=CLIENT_ID,
    )
    buffer = io.BytesIO()
    buffer.write(b"\0\0\0\0")
    write_header(buffer, header)
    write_body(buffer, request)
    data = buffer.getbuffer()
    _SIZE.pack_into(data, 0, len(data) - 4)
    return bytes(data)


@st.composite
def valid_request(draw: st.DrawFn, api_key: int | None = None, version: int | None = None) -> bytes:
    """A well-formed frame of one advertised API version (any, unless given)."""
    if api_key is None or version is None:
        api_key, version = draw(st.sampled_from(API_VERSIONS))
    schema = _writer(api_key, version)[0]
    return encode(api_key, version, draw(st.from_type(schema)))


# Positions and lengths are drawn as plain numbers and scaled to the frame: every draw
# keeps the same shape whatever frame it damages, as hypothesis requires.
_ANYWHERE = st.integers(0, 2**16)


@st.composite
def mutated(draw: st.DrawFn, frame: bytes) -> bytes:
    """``frame`` damaged the ways a buggy or hostile client would."""
    data = bytearray(frame)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(("limit", "byte", "truncate", "extend", "size")))
        if kind == "limit":
            width = draw(st.sampled_from((1, 2, 4, 8)))
            value = draw(st.sampled_from(_LIMITS)) & (2 ** (8 * width) - 1)
            at, room = draw(_ANYWHERE), len(data) - width - 12
            if room > 0:
                struct.pack_into(_WIDTHS[width], data, 12 + at % room, value)
        elif kind == "byte":
            at, value = draw(_ANYWHERE), draw(st.integers(0, 255))
            if len(data) > 4:
                data[4 + at % (len(data) - 4)] = value
        elif kind == "truncate":
            del data[4 + draw(_ANYWHERE) % max(1, len(data) - 4) :]
        elif kind == "extend":
            data += draw(st.binary(min_size=1, max_size=64))
        if kind != "size":
            # Keep the size prefix right unless the mutation is about the size prefix.
            _SIZE.pack_into(data, 0, len(data) - 4)
        else:
            _SIZE.pack_into(data, 0, len(data) - 4 + draw(st.sampled_from((-3, -1, 1, 7))))
    return bytes(data)


@st.composite
def random_frame(draw: st.DrawFn) -> bytes:
    """A frame with a plausible header (known API key, any version) and a random body."""
    api_key, _ = draw(st.sampled_from(API_VERSIONS))
    version = draw(st.integers(-1, 20))
    client_id = CLIENT_ID.encode()
    payload = (
        _HEADER_V1_PREFIX.pack(api_key, version, 0, len(client_id))
        + client_id
        + draw(st.binary(max_size=200))
    )
    return _SIZE.pack(len(payload)) + payload


# -- the case mix ----------------------------------------------------------------------

#: Percent of cases that are fresh structured requests (the costly kind to generate);
#: the others mutate one of those kept so far, or are random frames.
FRESH_PERCENT = 3
CORPUS_LIMIT = 5000


class Corpus:
    """Valid frames drawn so far: mutations start from them."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def add(self, frame: bytes, slot: int) -> None:
        if len(self.frames) < CORPUS_LIMIT:
            self.frames.append(frame)
        else:
            self.frames[slot % CORPUS_LIMIT] = frame

    def pick(self, slot: int) -> bytes:
        return self.frames[slot % len(self.frames)] if self.frames else _API_VERSIONS_V0


_API_VERSIONS_V0 = (
    _SIZE.pack(10 + len(CLIENT_ID))
    + _HEADER_V1_PREFIX.pack(18, 0, 0, len(CLIENT_ID))
    + CLIENT_ID.encode()
)


def every_api_version() -> st.SearchStrategy[list[bytes]]:
    """One valid frame of each advertised API version."""
    return st.tuples(*(valid_request(key, version) for key, version in API_VERSIONS)).map(list)


def a_case(corpus: Corpus) -> st.SearchStrategy[bytes]:
    @st.composite
    def case(draw: st.DrawFn) -> bytes:
        kind = draw(st.integers(0, 99))
        if kind < FRESH_PERCENT:
            frame = draw(valid_request())
            corpus.add(frame, draw(st.integers(0, CORPUS_LIMIT - 1)))
            return frame
        if kind < 80:
            return draw(mutated(corpus.pick(draw(st.integers(0, 2**32)))))
        if kind < 92:
            return draw(random_frame())
        return draw(st.binary(min_size=8, max_size=64).map(lambda b: _SIZE.pack(len(b)) + b))

    return case()
