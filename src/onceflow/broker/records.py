"""Record batch v2 header view.

The broker treats batches as opaque bytes: it reads the 61-byte header, checks the
CRC-32C, patches the base offset and stores the bytes. Individual records are never
decoded on the produce or fetch path.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cramjam
import google_crc32c
from kio.schema.errors import ErrorCode

from onceflow.varint import VarintError, read_varlong

HEADER_SIZE = 61
# baseOffset (8) + length (4): the length field counts everything after it.
LOG_OVERHEAD = 12
MAGIC_OFFSET = 16
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_BIT = 0x08
TRANSACTIONAL_BIT = 0x10
CONTROL_BIT = 0x20

NO_PRODUCER_ID = -1
NO_SEQUENCE = -1

_HEADER = struct.Struct(">qiiBIhiqqqhii")
_LENGTH = struct.Struct(">qi")
_BASE_OFFSET = struct.Struct(">q")


class InvalidBatch(ValueError):
    """A produced batch that must be refused. ``code`` is the Kafka error code."""

    def __init__(self, code: int, message: str, record_index: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        #: The refused record's index in its batch, when one record is to blame.
        self.record_index = record_index


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The fields of one record batch header that the broker acts on."""

    base_offset: int
    length: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    first_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Bytes the batch takes in the log, header included."""
        return self.length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def last_sequence(self) -> int:
        """Sequence of the last record; sequences wrap at int32 max like Kafka's."""
        return (self.base_sequence + self.last_offset_delta) % 2**31

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_BIT)

    @property
    def is_idempotent(self) -> bool:
        return self.producer_id >= 0


def read_header(buf: bytes | memoryview, pos: int = 0) -> BatchHeader:
    """Parse the header of the batch starting at ``pos`` (no CRC check)."""
    fields = _HEADER.unpack_from(buf, pos)
    # Field 2 is the partition leader epoch, which this single node always sets to 0.
    return BatchHeader(*fields[:2], *fields[3:])


def batch_length_at(buf: bytes | memoryview, pos: int) -> int:
    """Total size of the batch at ``pos``, from its length field."""
    return _LENGTH.unpack_from(buf, pos)[1] + LOG_OVERHEAD


def crc_ok(buf: bytes | memoryview, pos: int, header: BatchHeader) -> bool:
    end = pos + header.size
    return google_crc32c.value(bytes(buf[pos + ATTRIBUTES_OFFSET : end])) == header.crc


def split_produced(records: bytes) -> list[tuple[int, BatchHeader]]:
    """Validate the batches of one produced partition and return (position, header) each.

    Raises InvalidBatch with the Kafka error code a real broker would answer.
    """
    batches: list[tuple[int, BatchHeader]] = []
    pos = 0
    total = len(records)
    if total == 0:
        raise InvalidBatch(ErrorCode.invalid_record, "produce request carries no record batch")
    while pos < total:
        if total - pos < HEADER_SIZE:
            raise InvalidBatch(ErrorCode.corrupt_message, "record batch is truncated")
        if records[pos + MAGIC_OFFSET] != 2:
            raise InvalidBatch(
                ErrorCode.invalid_record,
                f"batch magic {records[pos + MAGIC_OFFSET]}: produce v3+ takes v2 batches only",
            )
        header = read_header(records, pos)
        if header.length < HEADER_SIZE - LOG_OVERHEAD or pos + header.size > total:
            raise InvalidBatch(ErrorCode.corrupt_message, "record batch length is inconsistent")
        if not crc_ok(records, pos, header):
            raise InvalidBatch(ErrorCode.corrupt_message, "record batch CRC-32C mismatch")
        if header.record_count <= 0 or header.last_offset_delta != header.record_count - 1:
            raise InvalidBatch(
                ErrorCode.invalid_record, "record count and last offset delta disagree"
            )
        if header.is_control:
            raise InvalidBatch(ErrorCode.invalid_record, "clients may not produce control batches")
        if header.attributes & COMPRESSION_MASK not in _DECOMPRESS:
            # No consumer could read it back.
            raise InvalidBatch(
                ErrorCode.corrupt_message,
                f"unknown compression codec {header.attributes & COMPRESSION_MASK}",
            )
        batches.append((pos, header))
        pos += header.size
    return batches


def patch_base_offset(batch: bytearray | memoryview, base_offset: int) -> None:
    """Assign offsets: bytes 0-7 lie outside the CRC, so no new CRC is needed."""
    _BASE_OFFSET.pack_into(batch, 0, base_offset)
    # partitionLeaderEpoch: this single node is always leader epoch 0.
    struct.pack_into(">i", batch, 12, 0)


_XERIAL_MAGIC = b"\x82SNAPPY\x00"


def _decompress_snappy(data: bytes) -> bytes:
    if not data.startswith(_XERIAL_MAGIC):
        return bytes(cramjam.snappy.decompress_raw(data))
    # Java clients frame snappy as xerial blocks: 16-byte header, then (int32 size, block)*.
    out = bytearray()
    pos = 16
    while pos < len(data):
        (size,) = struct.unpack_from(">i", data, pos)
        out += cramjam.snappy.decompress_raw(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return bytes(out)


_DECOMPRESS = {
    0: bytes,
    1: lambda data: bytes(cramjam.gzip.decompress(data)),
    2: _decompress_snappy,
    3: lambda data: bytes(cramjam.lz4.decompress(data)),
    4: lambda data: bytes(cramjam.zstd.decompress(data)),
}


def first_record_at_or_after(
    batch: bytes, header: BatchHeader, timestamp: int
) -> tuple[int, int] | None:
    """(offset, timestamp) of the first record of ``batch`` stamped at or after ``timestamp``.

    Only ListOffsets-by-timestamp needs this; produce and fetch never look inside batches.
    """
    for record in decode_records(batch, header):
        if record.timestamp >= timestamp:
            return record.offset, record.timestamp
    return None


# -- transaction markers -------------------------------------------------------------

CONTROL_ABORT = 0
CONTROL_COMMIT = 1
_CONTROL_KEY = struct.Struct(">hh")
_CONTROL_VALUE = struct.Struct(">hi")


def _zigzag(value: int) -> bytes:
    raw = (value << 1) ^ (value >> 63)
    out = bytearray()
    while raw > 0x7F:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)
    return bytes(out)


def build_control_batch(
    producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int, timestamp: int
) -> bytes:
    """A COMMIT or ABORT marker: one control record, key (version 0, type), value
    (version 0, coordinator epoch). Its base offset is patched on append like any batch."""
    key = _CONTROL_KEY.pack(0, CONTROL_COMMIT if commit else CONTROL_ABORT)
    value = _CONTROL_VALUE.pack(0, coordinator_epoch)
    body = (
        b"\x00"  # record attributes
        + _zigzag(0)  # timestamp delta
        + _zigzag(0)  # offset delta
        + _zigzag(len(key))
        + key
        + _zigzag(len(value))
        + value
        + _zigzag(0)  # no headers
    )
    record = _zigzag(len(body)) + body
    attributes = TRANSACTIONAL_BIT | CONTROL_BIT
    after_crc = (
        struct.pack(
            ">hiqqqhii", attributes, 0, timestamp, timestamp, producer_id, producer_epoch, -1, 1
        )
        + record
    )
    crc = google_crc32c.value(after_crc)
    length = 4 + 1 + 4 + len(after_crc)  # leader epoch, magic, crc, rest
    return struct.pack(">qiibI", 0, length, 0, 2, crc) + after_crc


def control_type(batch: bytes | memoryview, header: BatchHeader) -> int:
    """CONTROL_COMMIT or CONTROL_ABORT of a control batch (its first record's key)."""
    body = bytes(batch[HEADER_SIZE : header.size])
    _, pos = read_varlong(body, 0)  # record length
    pos += 1  # attributes
    _, pos = read_varlong(body, pos)  # timestamp delta
    _, pos = read_varlong(body, pos)  # offset delta
    key_length, pos = read_varlong(body, pos)
    if key_length < _CONTROL_KEY.size:
        raise InvalidBatch(ErrorCode.corrupt_message, "control record key is too short")
    return _CONTROL_KEY.unpack_from(body, pos)[1]


# -- rewriting batches (LogAppendTime, the compaction cleaner) ------------------------

_REBUILT_AFTER_CRC = struct.Struct(">hiqqqhii")
_REBUILT_PREFIX = struct.Struct(">qiibI")


def stamp_log_append_time(batch: bytes, timestamp: int) -> bytes:
    """The batch stamped with the broker's clock: the timestamp-type bit set and
    maxTimestamp replaced (consumers then use it for every record). Both lie inside the
    CRC, so it is recomputed."""
    out = bytearray(batch)
    (attributes,) = struct.unpack_from(">h", out, ATTRIBUTES_OFFSET)
    struct.pack_into(">h", out, ATTRIBUTES_OFFSET, attributes | TIMESTAMP_TYPE_BIT)
    struct.pack_into(">q", out, 35, timestamp)
    struct.pack_into(">I", out, CRC_OFFSET, google_crc32c.value(bytes(out[ATTRIBUTES_OFFSET:])))
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a batch, as the cleaner and timestamp lookups need it."""

    offset: int
    key: bytes | None
    tombstone: bool
    #: The encoded record (length prefix included), valid in any batch with the same
    #: base offset and first timestamp, since its deltas are relative to those.
    raw: bytes
    #: CreateTime, or the batch's LogAppendTime; -1 where unknown.
    timestamp: int = -1


def decode_records(batch: bytes | memoryview, header: BatchHeader) -> list[Record]:
    """Every record of a data batch, decompressing if needed.

    Raises InvalidBatch when the records cannot be decoded.
    """
    codec = header.attributes & COMPRESSION_MASK
    if codec not in _DECOMPRESS:
        raise InvalidBatch(ErrorCode.corrupt_message, f"unknown compression codec {codec}")
    log_append_time = bool(header.attributes & TIMESTAMP_TYPE_BIT)
    records = []
    # Produce checks only the CRC, so the records inside may still be garbage.
    try:
        body = _DECOMPRESS[codec](bytes(batch[HEADER_SIZE : header.size]))
        pos = 0
        for _ in range(header.record_count):
            start = pos
            length, pos = read_varlong(body, pos)
            end = pos + length
            if length < 0 or end > len(body):
                raise IndexError("record length past the batch end")
            pos += 1  # attributes
            timestamp_delta, pos = read_varlong(body, pos)
            offset_delta, pos = read_varlong(body, pos)
            key_length, pos = read_varlong(body, pos)
            key = None if key_length < 0 else body[pos : pos + key_length]
            pos += max(key_length, 0)
            value_length, pos = read_varlong(body, pos)
            timestamp = (
                header.max_timestamp
                if log_append_time
                else header.first_timestamp + timestamp_delta
            )
            records.append(
                Record(
                    header.base_offset + offset_delta,
                    key,
                    value_length < 0,
                    body[start:end],
                    timestamp,
                )
            )
            pos = end
    except (IndexError, VarintError, cramjam.DecompressionError) as exc:
        raise InvalidBatch(
            ErrorCode.corrupt_message,
            f"records of the batch at offset {header.base_offset} are undecodable: {exc}",
        ) from exc
    return records


def rebuild_batch(header: BatchHeader, kept: list[Record]) -> bytes:
    """An uncompressed batch of ``kept`` records with the header of the original.

    Base offset, lastOffsetDelta, timestamps, producer id/epoch, base sequence and the
    transactional/control bits are preserved, so every record keeps its offset and the
    segment keeps its offset range (as Kafka's cleaner does)."""
    after_crc = _REBUILT_AFTER_CRC.pack(
        header.attributes & ~COMPRESSION_MASK,
        header.last_offset_delta,
        header.first_timestamp,
        header.max_timestamp,
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
        len(kept),
    ) + b"".join(r.raw for r in kept)
    length = 4 + 1 + 4 + len(after_crc)  # leader epoch, magic, crc, the rest
    crc = google_crc32c.value(after_crc)
    return _REBUILT_PREFIX.pack(header.base_offset, length, 0, 2, crc) + after_crc
