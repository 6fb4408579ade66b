"""Long-polling fetches are woken by their own partitions' data only."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kio.schema.errors import ErrorCode
from txn_wire import TxnProducer
from wire import FETCH_VERSION, WireClient, decode_batches, values_batch

from onceflow.broker.config import BrokerConfig
from onceflow.broker.server import run_in_thread

FETCH = 1
# Longer than the test takes: an answer before it is a wake-up, not a timeout.
MAX_WAIT = datetime.timedelta(seconds=30)
PARK_TIMEOUT_SECONDS = 10.0
BUSY_APPENDS = 50
READ_COMMITTED = 1


def test_appends_to_another_partition_do_not_wake_a_parked_fetch(tmp_path: Path) -> None:
    with run_in_thread(BrokerConfig(data_dir=tmp_path / "data", port=0)) as running:
        broker = running.broker
        with WireClient.connect(running.bootstrap) as producer:
            producer.ensure_topic("quiet")
            producer.ensure_topic("busy")
            quiet = broker.topics.partition("quiet", 0)
            poller = WireClient.connect(running.bootstrap)
            request = dataclasses.replace(poller.fetch_request("quiet", 0, 0), max_wait=MAX_WAIT)
            sent = poller.send(request)
            deadline = time.monotonic() + PARK_TIMEOUT_SECONDS
            while broker.fetch_waiters.parked(quiet) == 0:
                assert time.monotonic() < deadline, "the fetch never parked"

            for i in range(BUSY_APPENDS):
                answer = producer.produce("busy", 0, values_batch([b"busy-%d" % i]))
                assert answer.error_code == ErrorCode.none
            assert broker.fetch_waiters.wakeups == 0
            assert broker.fetch_waiters.parked(quiet) == 1

            assert producer.produce("quiet", 0, values_batch([b"wake"])).error_code == 0
            started = time.monotonic()
            response = poller.receive(FETCH, FETCH_VERSION, sent)
            # Far from MAX_WAIT: it was the append that answered it.
            assert time.monotonic() - started < MAX_WAIT.total_seconds() / 2
            (data,) = response.responses[0].partitions
            values = [r.value for b in decode_batches(data.records or b"") for r in b.records]
            assert values == [b"wake"]
            assert broker.fetch_waiters.wakeups == 1
            assert broker.fetch_waiters.parked(quiet) == 0
            poller.close()


MIN_BYTES = 2_000


@dataclasses.dataclass
class ParkedFetch:
    """A broker, a producing client, and a fetch from offset 0 waiting for MIN_BYTES."""

    broker: Any
    bootstrap: str
    producer: WireClient
    poller: WireClient
    partition: Any
    sent: int  # the fetch's correlation id

    def answer(self) -> Any:
        (data,) = self.poller.receive(FETCH, FETCH_VERSION, self.sent).responses[0].partitions
        return data


@contextlib.contextmanager
def parked_fetch(
    config: BrokerConfig, topic: str, isolation_level: int = 0
) -> Iterator[ParkedFetch]:
    with (
        run_in_thread(config) as running,
        WireClient.connect(running.bootstrap) as producer,
        WireClient.connect(running.bootstrap) as poller,
    ):
        producer.ensure_topic(topic)
        broker, partition = running.broker, running.broker.topics.partition(topic, 0)
        request = dataclasses.replace(
            poller.fetch_request(topic, 0, 0, isolation_level=isolation_level),
            max_wait=MAX_WAIT,
            min_bytes=MIN_BYTES,
        )
        sent = poller.send(request)
        deadline = time.monotonic() + PARK_TIMEOUT_SECONDS
        while broker.fetch_waiters.parked(partition) == 0:
            assert time.monotonic() < deadline, "the fetch never parked"
        yield ParkedFetch(broker, running.bootstrap, producer, poller, partition, sent)


def test_a_parked_fetch_sleeps_through_appends_below_its_min_bytes(tmp_path: Path) -> None:
    with parked_fetch(BrokerConfig(data_dir=tmp_path / "data", port=0), "trickle") as fetch:
        partition, waiters = fetch.partition, fetch.broker.fetch_waiters
        appended = 0
        sizes = []
        while True:
            batch = values_batch([b"drop-%d" % len(sizes)])
            assert fetch.producer.produce("trickle", 0, batch).error_code == ErrorCode.none
            sizes.append(len(batch))
            if appended + len(batch) >= MIN_BYTES:
                break
            appended += len(batch)
            # Acknowledged, so visible: the fetch was told and went on sleeping.
            assert partition.fetchable(0, partition.high_watermark) == (appended, False)
            assert waiters.wakeups == 0
            assert waiters.parked(partition) == 1
        assert len(sizes) > 10

        data = fetch.answer()
        assert len(data.records or b"") == sum(sizes) >= MIN_BYTES
        assert waiters.wakeups == 1


def test_a_parked_fetch_answers_once_its_segment_is_complete(tmp_path: Path) -> None:
    # As Kafka does: a read stays in one segment, so once the log rolls past the fetch
    # offset's segment, waiting for min_bytes could not make the answer bigger.
    config = BrokerConfig(data_dir=tmp_path / "data", port=0, segment_bytes=600)
    with parked_fetch(config, "rolling") as fetch:
        first_segment = []
        for i in range(BUSY_APPENDS):
            answer = fetch.producer.produce("rolling", 0, values_batch([b"roll-%d" % i]))
            assert answer.error_code == ErrorCode.none
            if len(fetch.partition.segments) > 1:
                break
            first_segment.append(b"roll-%d" % i)
            assert fetch.broker.fetch_waiters.wakeups == 0
        assert len(fetch.partition.segments) > 1

        started = time.monotonic()
        data = fetch.answer()
        assert time.monotonic() - started < MAX_WAIT.total_seconds() / 2
        values = [r.value for b in decode_batches(data.records or b"") for r in b.records]
        assert values == first_segment
        assert len(data.records or b"") < MIN_BYTES


def test_read_committed_min_bytes_counts_only_committed_data(tmp_path: Path) -> None:
    config = BrokerConfig(data_dir=tmp_path / "data", port=0)
    with parked_fetch(config, "ledger", isolation_level=READ_COMMITTED) as fetch:
        partition, waiters = fetch.partition, fetch.broker.fetch_waiters
        txn = TxnProducer(fetch.bootstrap, "min-bytes-txn")
        try:
            txn.add_partitions([("ledger", 0)])
            for i in range(40):
                txn.produce("ledger", 0, [b"open-%03d" % i + b"." * 64])
            # Plenty of bytes, all of them behind an open transaction (the LSO).
            assert partition.fetchable(0, partition.high_watermark)[0] >= MIN_BYTES
            assert partition.fetchable(0, partition.last_stable_offset) == (0, False)
            assert waiters.wakeups == 0
            assert waiters.parked(partition) == 1

            assert txn.end_txn(commit=True) == ErrorCode.none
            data = fetch.answer()
            values = [r.value for b in decode_batches(data.records or b"") for r in b.records]
            assert values[:40] == [b"open-%03d" % i + b"." * 64 for i in range(40)]
            assert waiters.wakeups >= 1
        finally:
            txn.close()
