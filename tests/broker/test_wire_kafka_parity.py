"""Answers the conformance suite (tests/conformance) found differing from Apache Kafka's,
now fixed in the broker: checked here on the embedded broker alone, without a JVM."""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest
from kio.schema.errors import ErrorCode
from wire import WireClient, build_batch, request_module, values_batch

from onceflow.broker.protocol import build
from onceflow.testing import BrokerProcess


@pytest.fixture
def client(shared_broker: BrokerProcess) -> Iterator[WireClient]:
    with WireClient.connect(shared_broker.bootstrap) as wire:
        yield wire


def create_compacted(client: WireClient, topic: str) -> None:
    m = request_module(19, 4)
    config = build(m.CreatableTopicConfig, name="cleanup.policy", value="compact")
    wanted = build(
        m.CreatableTopic, name=topic, num_partitions=1, replication_factor=-1,
        assignments=(), configs=(config,),
    )  # fmt: skip
    answer = client.request(
        build(
            m.CreateTopicsRequest,
            topics=(wanted,),
            timeout=datetime.timedelta(seconds=10),
            validate_only=False,
        )
    )
    assert answer.topics[0].error_code == ErrorCode.none


def test_compacted_topic_refuses_a_record_without_key(client: WireClient, topic: str) -> None:
    create_compacted(client, topic)
    refused = client.produce(topic, 0, build_batch([(b"k", b"v"), (None, b"keyless")]))
    assert refused.error_code == ErrorCode.invalid_record
    (record_error,) = refused.record_errors
    assert record_error.batch_index == 1
    assert "without key" in record_error.batch_index_error_message
    assert refused.log_start_offset == 0
    accepted = client.produce(topic, 0, build_batch([(b"k", b"v")]))
    assert (accepted.error_code, accepted.base_offset) == (ErrorCode.none, 0)


def test_refused_batch_reports_log_start_unless_refused_whole(
    client: WireClient, topic: str
) -> None:
    client.ensure_topic(topic)
    producer_id, epoch = client.init_producer_id()
    first = values_batch([b"x"], producer_id=producer_id, producer_epoch=epoch, base_sequence=0)
    assert client.produce(topic, 0, first).error_code == ErrorCode.none
    gap = client.produce(
        topic, 0, values_batch([b"x"], producer_id=producer_id, producer_epoch=epoch,
                               base_sequence=3),
    )  # fmt: skip
    assert (gap.error_code, gap.log_start_offset) == (ErrorCode.out_of_order_sequence_number, 0)
    two = client.produce(topic, 0, values_batch([b"a"]) + values_batch([b"b"]))
    assert (two.error_code, two.log_start_offset) == (ErrorCode.invalid_record, -1)
    corrupt = bytearray(values_batch([b"x"]))
    corrupt[-1] ^= 0xFF
    answer = client.produce(topic, 0, bytes(corrupt))
    assert (answer.error_code, answer.log_start_offset) == (ErrorCode.corrupt_message, -1)


def test_fetch_error_carries_no_offsets(client: WireClient, topic: str) -> None:
    client.ensure_topic(topic)
    assert client.produce(topic, 0, values_batch([b"a", b"b"])).error_code == ErrorCode.none
    past_end = client.fetch(topic, 0, 9)
    assert past_end.error_code == ErrorCode.offset_out_of_range
    assert (past_end.high_watermark, past_end.last_stable_offset, past_end.log_start_offset) == (
        -1,
        -1,
        -1,
    )
    assert past_end.aborted_transactions is None
    # read_uncommitted: no aborted list at all, as Kafka answers.
    assert client.fetch(topic, 0, 0).aborted_transactions is None


def test_idempotent_init_naming_its_id_gets_a_fresh_one(client: WireClient) -> None:
    producer_id, epoch = client.init_producer_id()
    fresh_id, fresh_epoch = client.init_producer_id(producer_id, epoch)
    assert fresh_id != producer_id and fresh_epoch == 0


def test_create_topics_answers_a_repeated_name_once(client: WireClient, topic: str) -> None:
    m = request_module(19, 4)
    wanted = build(
        m.CreatableTopic, name=topic, num_partitions=1, replication_factor=-1,
        assignments=(), configs=(),
    )  # fmt: skip
    answer = client.request(
        build(
            m.CreateTopicsRequest,
            topics=(wanted, wanted),
            timeout=datetime.timedelta(seconds=10),
            validate_only=False,
        )
    )
    assert [(t.name, t.error_code) for t in answer.topics] == [(topic, ErrorCode.invalid_request)]
