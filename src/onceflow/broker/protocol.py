"""Request decoding and response encoding on top of kio.

kio has one dataclass module per API version; this module hides the per-version
classes behind two calls, and ``build`` fills a response entity from keyword
arguments, dropping those the version does not have.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import struct
from functools import cache
from types import ModuleType
from typing import Any

from kio.index import load_payload_module, load_request_schema, load_response_schema
from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.serial import entity_reader, entity_writer
from kio.static.constants import EntityType

from onceflow.broker.frame_scan import check_body
from onceflow.broker.request_check import check_nulls

_SIZE = struct.Struct(">i")
_KEY_VERSION_CORRELATION = struct.Struct(">hhi")
NO_THROTTLE = datetime.timedelta(0)


class ProtocolError(Exception):
    """A frame the broker cannot answer; the connection is closed."""


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    api_key: int
    api_version: int
    correlation_id: int


def peek(frame: bytes) -> Frame:
    if len(frame) < _KEY_VERSION_CORRELATION.size:
        raise ProtocolError(f"request of {len(frame)} bytes is too short for a header")
    return Frame(*_KEY_VERSION_CORRELATION.unpack_from(frame))


@cache
def _request_codec(api_key: int, version: int) -> tuple[Any, Any, type]:
    schema = load_request_schema(api_key, version)
    return entity_reader(schema.__header_schema__), entity_reader(schema), schema


@cache
def _response_codec(api_key: int, version: int) -> tuple[type, Any, Any]:
    schema = load_response_schema(api_key, version)
    return schema.__header_schema__, entity_writer(schema.__header_schema__), entity_writer(schema)


@cache
def response_module(api_key: int, version: int) -> ModuleType:
    """The kio module holding the response classes of one API version."""
    return load_payload_module(api_key, version, EntityType.response)


@cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


def build(cls: type, /, **values: Any) -> Any:
    """Instantiate a kio entity with just the fields its version has."""
    names = _field_names(cls)
    return cls(**{k: v for k, v in values.items() if k in names})


def decode_request(frame: bytes, api_key: int, version: int) -> tuple[Any, Any]:
    """(header, request) of a frame whose API key and version are supported."""
    read_header, read_body, schema = _request_codec(api_key, version)
    try:
        header, used = read_header(frame, 0)
        check_body(frame, used, schema)
        request, _ = read_body(frame, used)
        check_nulls(request)
    except Exception as exc:
        raise ProtocolError(f"undecodable request (api {api_key} v{version}): {exc}") from exc
    return header, request


def decode_header_v1(frame: bytes) -> Any:
    """The non-flexible header, readable whatever the API version (for error answers)."""
    try:
        return entity_reader(RequestHeaderV1)(frame, 0)[0]
    except Exception as exc:
        raise ProtocolError(f"undecodable request header: {exc}") from exc


def encode_response(api_key: int, version: int, correlation_id: int, response: Any) -> bytes:
    """The size-prefixed response frame."""
    header_cls, write_header, write_body = _response_codec(api_key, version)
    buffer = io.BytesIO()
    buffer.write(b"\0\0\0\0")
    write_header(buffer, header_cls(correlation_id=correlation_id))
    write_body(buffer, response)
    data = buffer.getbuffer()
    _SIZE.pack_into(data, 0, len(data) - 4)
    return bytes(data)
