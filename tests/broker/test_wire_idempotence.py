"""Idempotent produce on the wire: retries dedup to one copy, gaps and stale epochs are
refused, and the dedup state outlives the broker process."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from kio.schema.errors import ErrorCode
from wire import WireClient, values_batch

from onceflow.testing import BrokerProcess

TOPIC = "idempotence"


def _values(prefix: str, count: int) -> list[bytes]:
    return [f"{prefix}-{i}".encode() for i in range(count)]


@pytest.fixture
def client(onceflow_broker_process: BrokerProcess) -> Iterator[WireClient]:
    with WireClient.connect(onceflow_broker_process.bootstrap) as wire:
        assert wire.ensure_topic(TOPIC) == 1
        yield wire


def test_init_producer_id_hands_out_distinct_ids(client: WireClient) -> None:
    first_id, first_epoch = client.init_producer_id()
    second_id, second_epoch = client.init_producer_id()
    assert first_id >= 0 and second_id >= 0
    assert first_id != second_id
    assert first_epoch == second_epoch == 0


def test_retried_batch_is_appended_once(onceflow_broker_process: BrokerProcess) -> None:
    with (
        WireClient.connect(onceflow_broker_process.bootstrap) as first,
        WireClient.connect(onceflow_broker_process.bootstrap) as retry,
    ):
        first.ensure_topic(TOPIC)
        producer_id, epoch = first.init_producer_id()
        batch = values_batch(
            _values("a", 3), producer_id=producer_id, producer_epoch=epoch, base_sequence=0
        )
        original = first.produce(TOPIC, 0, batch)
        # A client retries on a fresh connection after losing the response.
        duplicate = retry.produce(TOPIC, 0, batch)
        assert original.error_code == duplicate.error_code == ErrorCode.none
        assert original.base_offset == duplicate.base_offset == 0
        assert first.latest_offset(TOPIC, 0) == 3

        following = first.produce(
            TOPIC,
            0,
            values_batch(
                _values("b", 2), producer_id=producer_id, producer_epoch=epoch, base_sequence=3
            ),
        )
        assert (following.error_code, following.base_offset) == (ErrorCode.none, 3)
        assert first.fetch_values(TOPIC, 0) == list(enumerate(_values("a", 3) + _values("b", 2)))


def test_pipelined_duplicate_gets_the_same_offset(client: WireClient) -> None:
    producer_id, epoch = client.init_producer_id()
    batch = values_batch(
        _values("p", 4), producer_id=producer_id, producer_epoch=epoch, base_sequence=0
    )
    # Both copies in flight at once on one connection, as librdkafka sends retries.
    request = client.produce_request(TOPIC, 0, batch)
    sent = [client.send(request), client.send(request)]
    answers = [client.receive(0, request.__version__, c).responses[0] for c in sent]
    offsets = {a.partition_responses[0].base_offset for a in answers}
    assert {a.partition_responses[0].error_code for a in answers} == {ErrorCode.none}
    assert offsets == {0}
    assert client.latest_offset(TOPIC, 0) == 4


def test_other_records_on_used_sequences_are_refused_not_acknowledged(
    client: WireClient,
) -> None:
    producer_id, epoch = client.init_producer_id()
    first = values_batch(
        _values("first", 2), producer_id=producer_id, producer_epoch=epoch, base_sequence=0
    )
    placed = client.produce(TOPIC, 0, first)
    assert (placed.error_code, placed.base_offset) == (ErrorCode.none, 0)
    # What librdkafka sends after a transaction aborted while the first batch's answer
    # was lost: the same sequences in the same epoch, carrying other records. Answered
    # as a duplicate, it would be acknowledged at offsets that hold the first batch.
    reused = client.produce(
        TOPIC,
        0,
        values_batch(
            _values("other", 2), producer_id=producer_id, producer_epoch=epoch, base_sequence=0
        ),
    )
    assert reused.error_code == ErrorCode.out_of_order_sequence_number
    # A true retry (the same bytes) is still answered with its offsets.
    retried = client.produce(TOPIC, 0, first)
    assert (retried.error_code, retried.base_offset) == (ErrorCode.none, 0)
    assert client.fetch_values(TOPIC, 0) == list(enumerate(_values("first", 2)))


def test_sequence_gap_is_out_of_order(client: WireClient) -> None:
    producer_id, epoch = client.init_producer_id()
    ok = client.produce(
        TOPIC,
        0,
        values_batch([b"x"], producer_id=producer_id, producer_epoch=epoch, base_sequence=0),
    )
    assert ok.error_code == ErrorCode.none
    gap = client.produce(
        TOPIC,
        0,
        values_batch([b"y"], producer_id=producer_id, producer_epoch=epoch, base_sequence=2),
    )
    assert gap.error_code == ErrorCode.out_of_order_sequence_number
    assert client.latest_offset(TOPIC, 0) == 1
    assert client.fetch_values(TOPIC, 0) == [(0, b"x")]


def test_older_epoch_is_fenced(client: WireClient) -> None:
    producer_id, old_epoch = client.init_producer_id()
    assert (
        client.produce(
            TOPIC,
            0,
            values_batch(
                [b"old"], producer_id=producer_id, producer_epoch=old_epoch, base_sequence=0
            ),
        ).error_code
        == ErrorCode.none
    )
    # The Java client bumps an idempotent producer's epoch on its own (KIP-360); asking
    # InitProducerId with the current id and epoch gets a fresh id, as from Kafka.
    fresh_id, fresh_epoch = client.init_producer_id(producer_id, old_epoch)
    assert fresh_id != producer_id and fresh_epoch == 0
    new_epoch = old_epoch + 1
    assert (
        client.produce(
            TOPIC,
            0,
            values_batch(
                [b"new"], producer_id=producer_id, producer_epoch=new_epoch, base_sequence=0
            ),
        ).error_code
        == ErrorCode.none
    )

    zombie = client.produce(
        TOPIC,
        0,
        values_batch(
            [b"zombie"], producer_id=producer_id, producer_epoch=old_epoch, base_sequence=1
        ),
    )
    assert zombie.error_code == ErrorCode.invalid_producer_epoch
    assert client.fetch_values(TOPIC, 0) == [(0, b"old"), (1, b"new")]


@pytest.mark.parametrize(
    ("how", "segment_bytes"),
    [("kill", None), ("stop", None), ("kill", 200)],
    # With 200-byte segments the third batch rolls a segment, so recovery starts from
    # the producer snapshot written at that roll instead of replaying the whole log.
    ids=["kill", "stop", "kill-after-rolls"],
)
def test_dedup_state_survives_restart(
    onceflow_broker_process_factory: Callable[..., BrokerProcess],
    how: str,
    segment_bytes: int | None,
) -> None:
    extra_args = () if segment_bytes is None else ("--segment-bytes", str(segment_bytes))
    broker = onceflow_broker_process_factory(extra_args=extra_args)
    with WireClient.connect(broker.bootstrap) as before:
        before.ensure_topic(TOPIC)
        producer_id, epoch = before.init_producer_id()
        batches = [
            values_batch(
                _values(f"s{n}", 2),
                producer_id=producer_id,
                producer_epoch=epoch,
                base_sequence=2 * n,
            )
            for n in range(3)
        ]
        placed = [before.produce(TOPIC, 0, b) for b in batches]
        assert [(p.error_code, p.base_offset) for p in placed] == [
            (ErrorCode.none, 0),
            (ErrorCode.none, 2),
            (ErrorCode.none, 4),
        ]

    if how == "kill":
        broker.kill()
    else:
        assert broker.stop() == 0
    broker.start()

    with WireClient.connect(broker.bootstrap) as after:
        # Retries of the newest and of an older remembered batch both land where they did.
        for n in (2, 0):
            retried = after.produce(TOPIC, 0, batches[n])
            assert (retried.error_code, retried.base_offset) == (ErrorCode.none, 2 * n)
        assert after.latest_offset(TOPIC, 0) == 6
        # What the batches were (their checksums) is remembered across the restart too.
        other = values_batch(
            _values("other", 2), producer_id=producer_id, producer_epoch=epoch, base_sequence=4
        )
        assert after.produce(TOPIC, 0, other).error_code == ErrorCode.out_of_order_sequence_number
        gap = after.produce(
            TOPIC,
            0,
            values_batch([b"gap"], producer_id=producer_id, producer_epoch=epoch, base_sequence=9),
        )
        assert gap.error_code == ErrorCode.out_of_order_sequence_number
        following = after.produce(
            TOPIC,
            0,
            values_batch([b"next"], producer_id=producer_id, producer_epoch=epoch, base_sequence=6),
        )
        assert (following.error_code, following.base_offset) == (ErrorCode.none, 6)
        expected = [v for n in range(3) for v in _values(f"s{n}", 2)] + [b"next"]
        assert after.fetch_values(TOPIC, 0) == list(enumerate(expected))
