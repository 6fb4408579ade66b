"""kill -9 durability with real processes: acknowledged records survive, torn tails go.

The broker runs with flush=always, so an acknowledgement means fsynced: after a SIGKILL
every acknowledged record must be back at its offset, nothing half-written may be
visible, and the log must continue where it ended.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer, TopicPartition
from interop_support import (
    Rec,
    confluent_consumer,
    consume_confluent,
    produce_confluent,
    wait_until,
)
from kio.schema.errors import ErrorCode
from wire import WireClient, build_batch, values_batch

from onceflow.testing import BrokerProcess

SEGMENT_BYTES = 1024 * 1024
PARTITIONS = 2
# ~500-byte records: enough acknowledged bytes to roll several 1 MiB segments.
ACKS_BEFORE_KILL = 20000
ACK_WAIT = 25.0
PRODUCER_SCRIPT = Path(__file__).with_name("acked_producer.py")

BrokerFactory = Callable[..., BrokerProcess]


def read_acks(path: Path) -> dict[tuple[int, int], bytes]:
    """(partition, offset) -> value of every complete line of the producer's ack log."""
    acked: dict[tuple[int, int], bytes] = {}
    text = path.read_text(encoding="ascii") if path.exists() else ""
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # the producer died mid-line: that ack was never recorded
        partition, offset, value = line.split()
        key = (int(partition), int(offset))
        assert key not in acked, f"offset {key} acknowledged twice"
        acked[key] = value.encode()
    return acked


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def read_partition(bootstrap: str, topic: str, partition: int, high_watermark: int) -> list[bytes]:
    """Every value from offset 0 to the high watermark through librdkafka, which fails on
    a record it cannot decode; offsets must be exactly 0, 1, 2, ..."""
    consumer = confluent_consumer(bootstrap)
    try:
        consumer.assign([TopicPartition(topic, partition, 0)])
        messages = consume_confluent(consumer, high_watermark, timeout=30)
    finally:
        consumer.close()
    assert [m.offset() for m in messages] == list(range(high_watermark))
    return [m.value() for m in messages]


@pytest.fixture
def producer_process(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        stderr = open(tmp_path / "producer.err", "ab")  # noqa: SIM115 - handed to the child
        process = subprocess.Popen([sys.executable, str(PRODUCER_SCRIPT), *args], stderr=stderr)
        stderr.close()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def test_acknowledged_records_survive_kill_9(
    onceflow_broker_process_factory: BrokerFactory,
    producer_process: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    broker = onceflow_broker_process_factory(
        extra_args=(
            "--segment-bytes", str(SEGMENT_BYTES),
            "--default-partitions", str(PARTITIONS),
        )
    )  # fmt: skip
    topic = "durable"
    with WireClient.connect(broker.bootstrap) as wire:
        assert wire.ensure_topic(topic) == PARTITIONS
    ack_log = tmp_path / "acks.txt"
    producer = producer_process(broker.bootstrap, topic, str(PARTITIONS), str(ack_log), "60")

    wait_until(
        lambda: count_lines(ack_log) >= ACKS_BEFORE_KILL or producer.poll() is not None,
        ACK_WAIT,
        f"{ACKS_BEFORE_KILL} acknowledged records",
    )
    assert producer.poll() is None, "the producer stopped before the broker was killed"
    broker.kill()
    producer.kill()
    producer.wait(30)
    acked = read_acks(ack_log)
    assert len(acked) >= ACKS_BEFORE_KILL

    broker.start()
    with WireClient.connect(broker.bootstrap) as wire:
        ends = [wire.latest_offset(topic, p) for p in range(PARTITIONS)]
        # kio decodes every batch and checks its CRC, so a torn batch would fail here.
        for partition in range(PARTITIONS):
            batches = wire.fetch_batches(topic, partition)
            assert sum(len(b.records) for b in batches) == ends[partition]
    logs = {p: read_partition(broker.bootstrap, topic, p, ends[p]) for p in range(PARTITIONS)}

    lost = {
        (partition, offset): value
        for (partition, offset), value in acked.items()
        if offset >= len(logs[partition]) or logs[partition][offset] != value
    }
    assert not lost, (
        f"{len(lost)} acknowledged records lost or moved, e.g. {list(lost.items())[:3]}"
    )
    every_value = [value for values in logs.values() for value in values]
    assert len(set(every_value)) == len(every_value), "the idempotent producer left duplicates"
    rolled = [
        len(list((broker.data_dir / f"{topic}-{p}").glob("*.log"))) for p in range(PARTITIONS)
    ]
    assert max(rolled) > 1, f"no segment rolled (segments per partition: {rolled})"

    # The log continues at its end: no gap, no offset handed out twice.
    after = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for partition in range(PARTITIONS):
        records = [Rec(None, f"after-restart-{partition}-{i}".encode()) for i in range(10)]
        reports = produce_confluent(after, topic, records, partition=partition, timeout=30)
        assert [r.offset() for r in reports] == list(range(ends[partition], ends[partition] + 10))
        values = read_partition(broker.bootstrap, topic, partition, ends[partition] + 10)
        assert values[: ends[partition]] == logs[partition]
        assert values[ends[partition] :] == [r.value for r in records]


def _torn_batch(batch: bytes) -> bytes:
    return batch[: len(batch) // 2]


def _header_fragment(batch: bytes) -> bytes:
    return batch[:30]


def _bad_crc_batch(batch: bytes) -> bytes:
    return batch[:-1] + bytes([batch[-1] ^ 0x01])


def _garbage(_batch: bytes) -> bytes:
    return bytes(range(256)) * 3


TORN_TAILS = {
    "half-batch": _torn_batch,
    "header-fragment": _header_fragment,
    "whole-batch-bad-crc": _bad_crc_batch,
    "garbage": _garbage,
}


@pytest.mark.parametrize("make_tail", TORN_TAILS.values(), ids=TORN_TAILS.keys())
def test_torn_tail_is_truncated_on_restart(
    onceflow_broker_process: BrokerProcess, make_tail: Callable[[bytes], bytes]
) -> None:
    broker = onceflow_broker_process
    topic = "torn"
    with WireClient.connect(broker.bootstrap) as wire:
        wire.ensure_topic(topic)
        producer_id, epoch = wire.init_producer_id()
        batches = [
            values_batch(
                [f"v{n}-{i}".encode() for i in range(3)],
                producer_id=producer_id,
                producer_epoch=epoch,
                base_sequence=3 * n,
            )
            for n in range(3)
        ]
        for n, batch in enumerate(batches):
            answer = wire.produce(topic, 0, batch)
            assert (answer.error_code, answer.base_offset) == (ErrorCode.none, 3 * n)
        before = wire.fetch_values(topic, 0)
    broker.kill()

    segment = sorted((broker.data_dir / f"{topic}-0").glob("*.log"))[-1]
    clean_size = segment.stat().st_size
    # What a crash mid-write leaves: the next batch, as the broker would have stored it.
    next_batch = bytearray(build_batch([(b"k", b"torn" * 20)] * 4))
    next_batch[:8] = (9).to_bytes(8, "big")
    with segment.open("ab") as log:
        log.write(make_tail(bytes(next_batch)))

    broker.start()
    assert segment.stat().st_size == clean_size
    with WireClient.connect(broker.bootstrap) as wire:
        assert wire.latest_offset(topic, 0) == 9
        assert wire.fetch_values(topic, 0) == before
        # Producer state was rebuilt from the surviving batches only.
        retried = wire.produce(topic, 0, batches[-1])
        assert (retried.error_code, retried.base_offset) == (ErrorCode.none, 6)
        following = wire.produce(
            topic,
            0,
            values_batch(
                [b"after"], producer_id=producer_id, producer_epoch=epoch, base_sequence=9
            ),
        )
        assert (following.error_code, following.base_offset) == (ErrorCode.none, 9)
        assert wire.fetch_values(topic, 0) == [*before, (9, b"after")]


def test_torn_first_batch_of_a_new_segment_and_a_damaged_index(
    onceflow_broker_process_factory: BrokerFactory,
) -> None:
    """A crash right after a roll leaves a segment holding only a torn batch; the index of
    a closed segment is a cache, so damage to it must only cost a rebuild."""
    broker = onceflow_broker_process_factory(extra_args=("--segment-bytes", "300"))
    topic = "torn-roll"
    with WireClient.connect(broker.bootstrap) as wire:
        wire.ensure_topic(topic)
        for n in range(4):
            answer = wire.produce(topic, 0, values_batch([f"v{n}-{i}".encode() for i in range(3)]))
            assert (answer.error_code, answer.base_offset) == (ErrorCode.none, 3 * n)
        before = wire.fetch_values(topic, 0)
    broker.kill()

    directory = broker.data_dir / f"{topic}-0"
    closed = sorted(directory.glob("*.log"))
    assert len(closed) > 1, "no segment rolled"
    closed[0].with_suffix(".index").write_bytes(b"\x01\x02\x03")
    torn = bytearray(build_batch([(None, b"torn" * 30)] * 3))
    torn[:8] = (12).to_bytes(8, "big")
    fresh = directory / f"{12:020d}.log"
    fresh.write_bytes(bytes(torn[: len(torn) // 2]))

    broker.start()
    assert fresh.stat().st_size == 0
    with WireClient.connect(broker.bootstrap) as wire:
        assert wire.latest_offset(topic, 0) == 12
        assert wire.fetch_values(topic, 0) == before
        answer = wire.produce(topic, 0, values_batch([b"after"]))
        assert (answer.error_code, answer.base_offset) == (ErrorCode.none, 12)
        assert wire.fetch_values(topic, 0) == [*before, (12, b"after")]
