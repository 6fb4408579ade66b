"""Bad input gets a Kafka error code or a closed connection, never a crash.

Every test sends one kind of bad input to a shared broker process, asserts which of the
two answers it got, and then checks that the broker is alive, serves a new client and
still holds the records written before.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import pytest
from confluent_kafka import Producer, TopicPartition
from interop_support import (
    confluent_consumer,
    confluent_rec,
    consume_confluent,
    make_records,
    produce_confluent,
)
from kio.schema.errors import ErrorCode
from wire import WireClient, decode_response, fix_crc, raw_frame, values_batch

from onceflow.broker.records import ATTRIBUTES_OFFSET, CONTROL_BIT, HEADER_SIZE
from onceflow.testing import BrokerProcess

SEED_TOPIC = "bad-input-seed"
SEED_VALUES = [f"seed-{i}".encode() for i in range(5)]
API_VERSIONS = 18
PRODUCE = 0
MAX_TIMESTAMP = -3
RECORD_COUNT_OFFSET = 57


@pytest.fixture(scope="module")
def seeded(shared_broker: BrokerProcess) -> BrokerProcess:
    """The shared broker with records that every bad input must leave untouched."""
    with WireClient.connect(shared_broker.bootstrap) as wire:
        assert wire.ensure_topic(SEED_TOPIC) == 1
        answer = wire.produce(SEED_TOPIC, 0, values_batch(SEED_VALUES))
        assert (answer.error_code, answer.base_offset) == (ErrorCode.none, 0)
    return shared_broker


def assert_healthy(broker: BrokerProcess) -> None:
    assert broker.process is not None and broker.process.poll() is None, "broker died"
    with WireClient.connect(broker.bootstrap) as wire:
        (entry,) = wire.metadata([SEED_TOPIC]).topics
        assert entry.error_code == ErrorCode.none
        assert wire.latest_offset(SEED_TOPIC, 0) == len(SEED_VALUES)
        assert wire.fetch_values(SEED_TOPIC, 0) == list(enumerate(SEED_VALUES))
    # A handler exception is also answered by closing the connection; only the log
    # tells it apart from input the broker refused on purpose.
    assert "Traceback" not in broker.log_path.read_text()


def legacy_message_v1(value: bytes) -> bytes:
    """A magic 1 message set entry (pre-0.11 format); its magic byte sits at offset 16
    like a v2 batch's, so a broker that reads it as v2 sees magic 1."""
    body = struct.pack(">bbq", 1, 0, 1_600_000_000_000) + struct.pack(">i", -1)
    body += struct.pack(">i", len(value)) + value
    message = struct.pack(">I", zlib.crc32(body)) + body
    return struct.pack(">qi", 0, len(message)) + message


_SIZE = struct.Struct(">i")

UNANSWERABLE = {
    "http-request": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "framed-garbage": _SIZE.pack(32) + b"\xff" * 32,
    "produce-with-garbage-body": raw_frame(PRODUCE, 7, 1, b"\xde\xad\xbe\xef" * 8),
    "length-2gib": _SIZE.pack(2**31 - 1) + b"\0" * 64,
    "length-negative": _SIZE.pack(-1) + b"\0" * 64,
    "length-zero": _SIZE.pack(0),
    "too-short-for-a-header": _SIZE.pack(4) + b"\0\0\0\0",
    "unknown-api-key": raw_frame(999, 0, 1),
    "produce-v99": raw_frame(PRODUCE, 99, 1, b"\0" * 16),
    "produce-v2": raw_frame(PRODUCE, 2, 1, b"\0" * 16),
}


@pytest.mark.parametrize("payload", UNANSWERABLE.values(), ids=UNANSWERABLE.keys())
def test_unanswerable_frame_closes_the_connection(seeded: BrokerProcess, payload: bytes) -> None:
    with WireClient.connect(seeded.bootstrap) as wire:
        wire.send_bytes(payload)
        assert wire.closed_by_peer(), "broker kept the connection open"
    assert_healthy(seeded)


def test_truncated_frame_closes_the_connection(seeded: BrokerProcess) -> None:
    with WireClient.connect(seeded.bootstrap) as wire:
        wire.send_bytes(_SIZE.pack(100) + b"\0" * 10)
        # Half-close: the broker sees end of stream 10 bytes into a 100-byte frame.
        wire.sock.shutdown(1)
        assert wire.closed_by_peer()
    assert_healthy(seeded)


def test_client_vanishing_mid_frame_is_harmless(seeded: BrokerProcess) -> None:
    wire = WireClient.connect(seeded.bootstrap)
    wire.send_bytes(_SIZE.pack(100) + b"\0" * 10)
    wire.close()
    assert_healthy(seeded)


def test_api_versions_too_new_is_answered_in_v0(seeded: BrokerProcess) -> None:
    with WireClient.connect(seeded.bootstrap) as wire:
        correlation_id = wire.next_correlation_id()
        # A future client's body: the broker must not need to understand it.
        wire.send_bytes(raw_frame(API_VERSIONS, 99, correlation_id, b"\x07future\x021\x00"))
        got, response = decode_response(wire.read_frame(), API_VERSIONS, 0)
        assert got == correlation_id
        assert response.error_code == ErrorCode.unsupported_version
        ranges = {a.api_key: (a.min_version, a.max_version) for a in response.api_keys}
        assert ranges[PRODUCE] == (3, 9)
        assert ranges[API_VERSIONS] == (0, 3)
        # The client retries lower on the same connection, as librdkafka does.
        assert wire.api_versions(3).error_code == ErrorCode.none
    assert_healthy(seeded)


def _with_attributes(batch: bytes, attributes: int) -> bytes:
    """The batch with other attributes and a CRC that matches them."""
    edited = bytearray(batch)
    struct.pack_into(">h", edited, ATTRIBUTES_OFFSET, attributes)
    fix_crc(edited)
    return bytes(edited)


def _with_record_count(count: int) -> Callable[[bytes], bytes]:
    def mangle(batch: bytes) -> bytes:
        edited = bytearray(batch)
        struct.pack_into(">i", edited, RECORD_COUNT_OFFSET, count)
        fix_crc(edited)
        return bytes(edited)

    return mangle


def _corrupt_value_byte(batch: bytes) -> bytes:
    return batch[:-3] + bytes([batch[-3] ^ 0x01]) + batch[-2:]


REFUSED_BATCHES = {
    "flipped-bit": (_corrupt_value_byte, ErrorCode.corrupt_message),
    "cut-short": (lambda batch: batch[:-5], ErrorCode.corrupt_message),
    "bad-crc-field": (
        lambda batch: batch[:17] + bytes([batch[17] ^ 0xFF]) + batch[18:],
        ErrorCode.corrupt_message,
    ),
    "magic-1": (
        lambda _batch: legacy_message_v1(b"legacy" * 10),
        ErrorCode.invalid_record,
    ),
    "empty": (lambda _batch: b"", ErrorCode.invalid_record),
    "compression-codec-7": (lambda batch: _with_attributes(batch, 7), ErrorCode.corrupt_message),
    "control-batch": (
        lambda batch: _with_attributes(batch, CONTROL_BIT),
        ErrorCode.invalid_record,
    ),
    "two-batches": (lambda batch: batch + batch, ErrorCode.invalid_record),
    "count-disagrees-with-last-delta": (_with_record_count(2), ErrorCode.invalid_record),
}


@pytest.mark.parametrize(("mangle", "error"), REFUSED_BATCHES.values(), ids=REFUSED_BATCHES.keys())
def test_refused_batch_gets_an_error_and_is_not_appended(
    seeded: BrokerProcess, mangle: object, error: ErrorCode
) -> None:
    assert callable(mangle)
    records = mangle(values_batch([b"must-not-appear"]))
    with WireClient.connect(seeded.bootstrap) as wire:
        answer = wire.produce(SEED_TOPIC, 0, records)
        assert answer.error_code == error
        assert answer.base_offset == -1
        # The connection stays usable after a refused batch.
        assert wire.latest_offset(SEED_TOPIC, 0) == len(SEED_VALUES)
    assert_healthy(seeded)


def test_list_offsets_by_time_over_undecodable_records(seeded: BrokerProcess) -> None:
    """The broker stores batches without decoding their records, so a batch with a valid
    CRC over garbage records is accepted; looking inside it later must not fail the
    request (or the connection) of whoever asks for offsets by timestamp."""
    topic = "undecodable-records"
    batch = bytearray(values_batch([b"r" * 40]))
    batch[HEADER_SIZE:] = b"\xff" * (len(batch) - HEADER_SIZE)
    fix_crc(batch)
    with WireClient.connect(seeded.bootstrap) as wire:
        wire.ensure_topic(topic)
        assert wire.produce(topic, 0, bytes(batch)).error_code == ErrorCode.none
        for timestamp in (0, MAX_TIMESTAMP):
            answer = wire.list_offsets(topic, 0, timestamp)
            assert answer.error_code == ErrorCode.corrupt_message
        assert wire.latest_offset(topic, 0) == 1
    assert_healthy(seeded)


@pytest.mark.parametrize("partition", [1, 7, -1])
def test_produce_to_missing_partition(seeded: BrokerProcess, partition: int) -> None:
    with WireClient.connect(seeded.bootstrap) as wire:
        answer = wire.produce(SEED_TOPIC, partition, values_batch([b"nowhere"]))
        assert answer.error_code == ErrorCode.unknown_topic_or_partition
        assert answer.index == partition
    assert_healthy(seeded)


@pytest.mark.parametrize("name", ["has/slash", "..", "x" * 250])
def test_illegal_topic_name(seeded: BrokerProcess, name: str) -> None:
    """Metadata, which may auto-create, names the problem; Produce never creates a topic,
    so for it the name is simply not a topic."""
    with WireClient.connect(seeded.bootstrap) as wire:
        (entry,) = wire.metadata([name]).topics
        assert entry.error_code == ErrorCode.invalid_topic_exception
        answer = wire.produce(name, 0, values_batch([b"nameless"]))
        assert answer.error_code == ErrorCode.unknown_topic_or_partition
    assert_healthy(seeded)


@pytest.mark.parametrize("acks", [5, 2, -2])
def test_invalid_acks(seeded: BrokerProcess, acks: int) -> None:
    with WireClient.connect(seeded.bootstrap) as wire:
        answer = wire.produce(SEED_TOPIC, 0, values_batch([b"bad-acks"]), acks=acks)
        assert answer.error_code == ErrorCode.invalid_required_acks
    assert_healthy(seeded)


def test_confluent_client_round_trips_after_bad_input(seeded: BrokerProcess) -> None:
    for payload in UNANSWERABLE.values():
        with WireClient.connect(seeded.bootstrap) as wire:
            wire.send_bytes(payload)
            assert wire.closed_by_peer()
    topic = "bad-input-round-trip"
    records = make_records(20, tag="after-bad-input", edge_cases=False)
    producer = Producer({"bootstrap.servers": seeded.bootstrap, "enable.idempotence": True})
    reports = produce_confluent(producer, topic, records, timeout=30)
    assert sorted(r.offset() for r in reports) == list(range(len(records)))
    consumer = confluent_consumer(seeded.bootstrap)
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        messages = consume_confluent(consumer, len(records), timeout=30)
    finally:
        consumer.close()
    assert [confluent_rec(m) for m in messages] == records
    assert_healthy(seeded)
