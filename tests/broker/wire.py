"""A raw Kafka wire client and a record batch v2 builder for broker tests.

Client libraries retry, renumber sequences and fix up bad input before it reaches the
wire; these helpers send exactly the bytes a test means (the same batch twice, a
sequence gap, a broken CRC) and decode exactly what the broker answered.
"""

from __future__ import annotations

import datetime
import struct
import time
from collections.abc import Iterator, Sequence
from typing import Any

import google_crc32c
from kio.records.readers import read_batch
from kio.records.schema import RecordBatch
from kio.schema.errors import ErrorCode

from onceflow.admin.wire import (
    DEFAULT_TIMEOUT,
    KafkaConnection,
    decode_response,
    encode_request,
    request_module,
)
from onceflow.broker.protocol import build
from onceflow.broker.records import ATTRIBUTES_OFFSET, CRC_OFFSET, LOG_OVERHEAD
from onceflow.client_settings import ClientSecurity

CLIENT_ID = "onceflow-wire-tests"
LATEST = -1
READ_UNCOMMITTED, READ_COMMITTED = 0, 1

# Newest versions the broker advertises; tests pin older ones explicitly when it matters.
PRODUCE_VERSION = 9
FETCH_VERSION = 12
LIST_OFFSETS_VERSION = 7
METADATA_VERSION = 12
INIT_PRODUCER_ID_VERSION = 4
API_VERSIONS_VERSION = 3

_SIZE = struct.Struct(">i")
# The part of every request header that all header versions share.
_HEADER_V1_PREFIX = struct.Struct(">hhih")
_BATCH_FIELDS = struct.Struct(">qiibIhiqqqhii")

KeyValue = tuple[bytes | None, bytes | None]
# Tests import these from here, next to the typed requests.
__all__ = ["WireClient", "build_batch", "decode_response", "encode_request", "fix_crc",
           "raw_frame", "request_module", "values_batch"]  # fmt: skip


# -- frames --------------------------------------------------------------------------


def raw_frame(api_key: int, api_version: int, correlation_id: int, body: bytes = b"") -> bytes:
    """A frame with a v1 request header for API keys or versions kio cannot encode."""
    client_id = CLIENT_ID.encode()
    payload = (
        _HEADER_V1_PREFIX.pack(api_key, api_version, correlation_id, len(client_id))
        + client_id
        + body
    )
    return _SIZE.pack(len(payload)) + payload


# -- connection ----------------------------------------------------------------------


class WireClient(KafkaConnection):
    """One raw connection with typed requests for the tests; responses are read in
    request order."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float = DEFAULT_TIMEOUT,
        security: ClientSecurity | None = None,
    ) -> None:
        super().__init__(host, port, timeout, client_id=CLIENT_ID, security=security)

    def closed_by_peer(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """True once the broker closes the connection; False if it answers or stays open."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                return True
            except TimeoutError:
                return False
            return not data
        return False

    # -- typed requests ------------------------------------------------------------

    def api_versions(self, version: int = API_VERSIONS_VERSION) -> Any:
        m = request_module(18, version)
        return self.request(
            build(
                m.ApiVersionsRequest,
                client_software_name="onceflow-tests",
                client_software_version="0",
            )
        )

    def metadata(self, topics: Sequence[str], version: int = METADATA_VERSION) -> Any:
        m = request_module(3, version)
        wanted = tuple(build(m.MetadataRequestTopic, name=t, topic_id=None) for t in topics)
        return self.request(
            build(
                m.MetadataRequest,
                topics=wanted,
                allow_auto_topic_creation=True,
                include_cluster_authorized_operations=False,
                include_topic_authorized_operations=False,
            )
        )

    def ensure_topic(self, topic: str) -> int:
        """Auto-create ``topic`` through Metadata; returns its partition count."""
        (entry,) = self.metadata([topic]).topics
        assert entry.error_code == ErrorCode.none, entry
        return len(entry.partitions)

    def init_producer_id(self, producer_id: int = -1, producer_epoch: int = -1) -> tuple[int, int]:
        m = request_module(22, INIT_PRODUCER_ID_VERSION)
        response = self.request(
            build(
                m.InitProducerIdRequest,
                transactional_id=None,
                transaction_timeout=datetime.timedelta(seconds=60),
                producer_id=producer_id,
                producer_epoch=producer_epoch,
            )
        )
        assert response.error_code == ErrorCode.none, response
        return response.producer_id, response.producer_epoch

    def produce_request(
        self,
        topic: str,
        partition: int,
        records: bytes,
        *,
        acks: int = -1,
        version: int = PRODUCE_VERSION,
    ) -> Any:
        m = request_module(0, version)
        data = build(m.PartitionProduceData, index=partition, records=records)
        return build(
            m.ProduceRequest,
            transactional_id=None,
            acks=acks,
            timeout=datetime.timedelta(seconds=10),
            topic_data=(build(m.TopicProduceData, name=topic, partition_data=(data,)),),
        )

    def produce(
        self,
        topic: str,
        partition: int,
        records: bytes,
        *,
        acks: int = -1,
        version: int = PRODUCE_VERSION,
    ) -> Any:
        """Produce one batch; returns the partition's PartitionProduceResponse."""
        response = self.request(
            self.produce_request(topic, partition, records, acks=acks, version=version)
        )
        (topic_response,) = response.responses
        (partition_response,) = topic_response.partition_responses
        return partition_response

    def list_offsets(self, topic: str, partition: int, timestamp: int) -> Any:
        """ListOffsets for one partition; returns its ListOffsetsPartitionResponse."""
        m = request_module(2, LIST_OFFSETS_VERSION)
        asked = build(m.ListOffsetsPartition, partition_index=partition, timestamp=timestamp)
        response = self.request(
            build(
                m.ListOffsetsRequest,
                replica_id=-1,
                isolation_level=0,
                topics=(build(m.ListOffsetsTopic, name=topic, partitions=(asked,)),),
            )
        )
        (answer,) = response.topics[0].partitions
        return answer

    def latest_offset(self, topic: str, partition: int) -> int:
        """The high watermark, as ListOffsets(LATEST) reports it."""
        answer = self.list_offsets(topic, partition, LATEST)
        assert answer.error_code == ErrorCode.none, answer
        return answer.offset

    def fetch(self, topic: str, partition: int, offset: int, **options: Any) -> Any:
        """One Fetch that does not wait for data; returns the partition's PartitionData.
        ``options``: those of ``fetch_request``."""
        response = self.request(self.fetch_request(topic, partition, offset, **options))
        (data,) = response.responses[0].partitions
        return data

    @staticmethod
    def fetch_request(
        topic: str,
        partition: int,
        offset: int,
        max_bytes: int = 2**20,
        isolation_level: int = READ_UNCOMMITTED,
    ) -> Any:
        m = request_module(1, FETCH_VERSION)
        return build(
            m.FetchRequest,
            max_wait=datetime.timedelta(0),
            min_bytes=1,
            max_bytes=max_bytes,
            isolation_level=isolation_level,
            topics=(
                build(
                    m.FetchTopic,
                    topic=topic,
                    partitions=(
                        build(
                            m.FetchPartition,
                            partition=partition,
                            fetch_offset=offset,
                            partition_max_bytes=max_bytes,
                        ),
                    ),
                ),
            ),
            forgotten_topics_data=(),
        )

    @staticmethod
    def create_topics_request(name: str, partitions: int = 1) -> Any:
        """CreateTopics (v4) of one topic, not only validated."""
        m = request_module(19, 4)
        return m.CreateTopicsRequest(
            topics=(
                m.CreatableTopic(
                    name=name,
                    num_partitions=partitions,
                    replication_factor=1,
                    assignments=(),
                    configs=(),
                ),
            ),
            timeout=datetime.timedelta(seconds=1),
            validate_only=False,
        )

    def fetch_batches(
        self, topic: str, partition: int, max_requests: int = 1000
    ) -> list[RecordBatch]:
        """Every batch below the high watermark, each decoded (and CRC-checked) by kio."""
        batches: list[RecordBatch] = []
        offset = 0
        for _ in range(max_requests):
            data = self.fetch(topic, partition, offset)
            assert data.error_code == ErrorCode.none, data
            if offset >= data.high_watermark:
                return batches
            fetched = decode_batches(data.records or b"")
            assert fetched, f"no batch at offset {offset} below {data.high_watermark}"
            batches.extend(fetched)
            offset = fetched[-1].base_offset + fetched[-1].last_offset_delta + 1
        raise AssertionError(f"partition {topic}-{partition} not read in {max_requests} fetches")

    def fetch_values(self, topic: str, partition: int) -> list[tuple[int, bytes | None]]:
        """(offset, value) of every record below the high watermark."""
        return [
            (record.offset, record.value)
            for batch in self.fetch_batches(topic, partition)
            for record in batch.records
        ]


# -- record batches ------------------------------------------------------------------


def _zigzag_varint(value: int) -> bytes:
    raw = (value << 1) ^ (value >> 63)
    out = bytearray()
    while raw >= 0x80:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)
    return bytes(out)


def _length_prefixed(data: bytes | None) -> bytes:
    if data is None:
        return _zigzag_varint(-1)
    return _zigzag_varint(len(data)) + data


def _record(offset_delta: int, key: bytes | None, value: bytes | None) -> bytes:
    body = (
        b"\0"  # attributes
        + _zigzag_varint(0)  # timestamp delta: every record shares the batch timestamp
        + _zigzag_varint(offset_delta)
        + _length_prefixed(key)
        + _length_prefixed(value)
        + _zigzag_varint(0)  # no headers
    )
    return _zigzag_varint(len(body)) + body


def build_batch(
    records: Sequence[KeyValue],
    *,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    timestamp_ms: int | None = None,
) -> bytes:
    """An uncompressed record batch v2 with a correct CRC-32C, as a producer sends it."""
    assert records, "a batch holds at least one record"
    timestamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    body = b"".join(_record(i, key, value) for i, (key, value) in enumerate(records))
    length = _BATCH_FIELDS.size - LOG_OVERHEAD + len(body)
    batch = bytearray(
        _BATCH_FIELDS.pack(
            0,  # base offset: the broker assigns it
            length,
            -1,  # partition leader epoch, unknown to producers
            2,  # magic
            0,  # CRC, filled in below
            0,  # attributes: no compression, CreateTime, not transactional
            len(records) - 1,
            timestamp,
            timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
            len(records),
        )
        + body
    )
    fix_crc(batch)
    return bytes(batch)


def fix_crc(batch: bytearray) -> None:
    """Recompute the CRC-32C of a batch after editing the bytes it covers."""
    struct.pack_into(">I", batch, CRC_OFFSET, google_crc32c.value(bytes(batch[ATTRIBUTES_OFFSET:])))


def values_batch(
    values: Sequence[bytes],
    *,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytes:
    """A batch of keyless records."""
    return build_batch(
        [(None, v) for v in values],
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
    )


def iter_batches(data: bytes) -> Iterator[RecordBatch]:
    position = 0
    while position < len(data):
        batch, used = read_batch(data, position)
        yield batch
        position += used


def decode_batches(data: bytes) -> list[RecordBatch]:
    """Decode whole batches; a torn or corrupt batch raises instead of being skipped."""
    return list(iter_batches(data))
