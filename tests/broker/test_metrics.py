"""Prometheus metrics of a real in-process broker, scraped over HTTP while confluent-kafka
clients produce, consume in a group, commit and run transactions."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from interop_support import wait_until

from onceflow.broker import metrics as metrics_module
from onceflow.broker.config import BrokerConfig
from onceflow.broker.server import BrokerStartError, BrokerThread
from onceflow.kafka_admin import create_topics
from onceflow.testing.metrics import Samples, scrape

TIMEOUT = 30.0
CHUNKS = 4
PER_CHUNK = 50
RECORDS = CHUNKS * PER_CHUNK
GROUP = "metrics-group"


def scrape_until(port: int, ready: Callable[[Samples], bool], timeout: float = 10.0) -> Samples:
    """Scrape until ``ready`` holds (the last scrape when the deadline passes)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when absent (a counter not yet touched)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerThread]:
    config = BrokerConfig(data_dir=tmp_path / "data", port=0, metrics_port=0)
    with BrokerThread(config) as running:
        yield running


def metrics_port(broker: BrokerThread) -> int:
    assert broker.broker.metrics is not None and broker.broker.metrics.port
    return broker.broker.metrics.port


class BackgroundScraper:
    """Scrapes continuously while traffic runs, so scrapes race real appends."""

    def __init__(self, port: int, topic: str) -> None:
        self._port = port
        self._topic = topic
        self._stop = threading.Event()
        self.records_in: list[float] = []
        self.failures: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 4 * TIMEOUT
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                samples = scrape(self._port)
            except Exception as exc:  # reported by the test, not lost in a thread
                self.failures.append(exc)
                return
            self.records_in.append(
                value(samples, "onceflow_broker_topic_records_in_total", topic=self._topic)
            )

    def __enter__(self) -> BackgroundScraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)


def txn_producer(bootstrap: str) -> Producer:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "metrics-txn"})
    producer.init_transactions(TIMEOUT)
    return producer


def produce_in_txn(producer: Producer, topic: str, count: int) -> None:
    producer.begin_transaction()
    for i in range(count):
        producer.produce(topic, value=f"txn-{i}".encode(), partition=0)
    assert producer.flush(TIMEOUT) == 0


def test_metrics_follow_real_traffic(broker: BrokerThread) -> None:
    topic = "metrics-topic"
    port = metrics_port(broker)
    create_topics(broker.bootstrap, topic)
    hw = "onceflow_broker_partition_high_watermark"
    lso = "onceflow_broker_partition_last_stable_offset"
    part = {"topic": topic, "partition": "0"}

    with BackgroundScraper(port, topic) as background:
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
        for chunk in range(1, CHUNKS + 1):
            for i in range(PER_CHUNK):
                producer.produce(topic, value=f"value-{chunk}-{i}".encode(), partition=0)
            assert producer.flush(TIMEOUT) == 0
            samples = scrape(port)
            produced = chunk * PER_CHUNK
            assert value(samples, "onceflow_broker_topic_records_in_total", topic=topic) == (
                produced
            )
            assert value(samples, hw, **part) == produced
            assert value(samples, lso, **part) == produced

        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap,
                "group.id": GROUP,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topic])
        consumed = 0
        deadline = time.monotonic() + TIMEOUT
        while consumed < RECORDS and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=0.5):
                if message.error():
                    raise KafkaException(message.error())
                consumed += 1
        assert consumed == RECORDS
        consumer.commit(asynchronous=False)
        in_group = scrape(port)
        consumer.close()

    assert not background.failures
    assert len(background.records_in) >= 2
    assert background.records_in == sorted(background.records_in)
    assert background.records_in[-1] == RECORDS

    assert value(in_group, "onceflow_broker_topic_bytes_in_total", topic=topic) > 0
    assert value(in_group, "onceflow_broker_topic_records_out_total", topic=topic) == RECORDS
    assert value(in_group, "onceflow_broker_topic_bytes_out_total", topic=topic) > 0
    assert value(in_group, "onceflow_broker_group_members", group=GROUP) == 1
    assert value(in_group, "onceflow_broker_groups", state="Stable") == 1
    assert value(in_group, "onceflow_broker_requests_total", api="OffsetCommit") >= 1
    produces = value(in_group, "onceflow_broker_requests_total", api="Produce")
    assert produces >= CHUNKS
    assert value(in_group, "onceflow_broker_request_seconds_count", api="Produce") == produces
    assert value(in_group, "onceflow_broker_fsync_seconds_count") > 0
    assert value(in_group, "onceflow_broker_fsync_round_files_sum") > 0
    assert value(in_group, "onceflow_broker_fsync_round_appends_sum") >= CHUNKS

    after_close = scrape(port)
    assert ("onceflow_broker_group_members", (("group", GROUP),)) not in after_close
    # The group keeps its committed offsets, so it is still listed, as Empty.
    assert value(after_close, "onceflow_broker_groups", state="Empty") == 1

    transactional = txn_producer(broker.bootstrap)
    produce_in_txn(transactional, topic, 10)
    transactional.commit_transaction(TIMEOUT)
    committed_end = RECORDS + 10 + 1  # the records and the commit marker
    # EndTxn is answered once the decision is durable; the marker lands right after,
    # and the transaction is complete once the coordinator's task resumes (a scrape can
    # fall between the two, seeing the LSO moved and the transaction still open).
    samples = scrape_until(
        port,
        lambda s: (
            value(s, lso, **part) == committed_end
            and value(s, "onceflow_broker_open_transactions") == 0
        ),
    )
    assert value(samples, hw, **part) == committed_end
    assert value(samples, lso, **part) == committed_end
    assert value(samples, "onceflow_broker_open_transactions") == 0

    produce_in_txn(transactional, topic, 5)
    samples = scrape(port)
    assert value(samples, "onceflow_broker_open_transactions") == 1
    assert value(samples, hw, **part) == committed_end + 5
    # The open transaction pins read_committed readers at its first record.
    assert value(samples, lso, **part) == committed_end
    assert value(samples, "onceflow_broker_oldest_transaction_age_seconds") > 0

    transactional.abort_transaction(TIMEOUT)
    samples = scrape_until(port, lambda s: value(s, "onceflow_broker_open_transactions") == 0)
    assert value(samples, "onceflow_broker_oldest_transaction_age_seconds") == 0
    assert value(samples, hw, **part) == committed_end + 5 + 1
    assert value(samples, lso, **part) == committed_end + 5 + 1
    assert value(samples, "onceflow_broker_topic_records_in_total", topic=topic) == RECORDS + 15


def test_error_codes_are_counted_per_api(broker: BrokerThread) -> None:
    topic = "metrics-errors"
    port = metrics_port(broker)
    create_topics(broker.bootstrap, topic)
    errors = "onceflow_broker_request_errors_total"
    assert value(scrape(port), errors, api="Fetch", error="offset_out_of_range") == 0
    # Fetching past the end is answered OFFSET_OUT_OF_RANGE; the client then resets.
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "x", "auto.offset.reset": "error"}
    )
    consumer.assign([TopicPartition(topic, 0, 1000)])
    try:
        deadline = time.monotonic() + TIMEOUT
        reported = False
        while not reported and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            reported = message is not None and message.error() is not None
        assert reported
        assert message.error().code() == KafkaError._AUTO_OFFSET_RESET
    finally:
        consumer.close()
    assert value(scrape(port), errors, api="Fetch", error="offset_out_of_range") >= 1


def test_brokers_in_one_process_have_their_own_metrics(tmp_path: Path) -> None:
    configs = [BrokerConfig(data_dir=tmp_path / n, port=0, metrics_port=0) for n in "ab"]
    with BrokerThread(configs[0]) as first, BrokerThread(configs[1]) as second:
        create_topics(first.bootstrap, "only-on-first")
        wait_until(
            lambda: (
                ("onceflow_broker_partition_high_watermark", _partition0("only-on-first"))
                in scrape(metrics_port(first))
            ),
            TIMEOUT,
            "the first broker's partition gauge",
        )
        assert metrics_port(first) != metrics_port(second)
        on_second = scrape(metrics_port(second))
        assert value(on_second, "onceflow_broker_requests_total", api="CreateTopics") == 0
        assert not any(labels == _partition0("only-on-first") for _, labels in on_second)


def _partition0(topic: str) -> tuple[tuple[str, str], ...]:
    return (("partition", "0"), ("topic", topic))


def test_metrics_are_off_by_default_and_stop_with_the_broker(tmp_path: Path) -> None:
    with BrokerThread(BrokerConfig(data_dir=tmp_path / "off", port=0)) as plain:
        assert plain.broker.metrics is None
    with BrokerThread(BrokerConfig(data_dir=tmp_path / "on", port=0, metrics_port=0)) as on:
        port = metrics_port(on)
        scrape(port)
    with pytest.raises(OSError):
        scrape(port)


def test_taken_metrics_port_is_a_start_error(broker: BrokerThread, tmp_path: Path) -> None:
    taken = BrokerConfig(data_dir=tmp_path / "second", port=0, metrics_port=metrics_port(broker))
    with pytest.raises(BrokerStartError, match=r"cannot serve metrics on 127\.0\.0\.1"):
        BrokerThread(taken).start()
    # The failed start released its data dir: a broker can open it again.
    with BrokerThread(BrokerConfig(data_dir=tmp_path / "second", port=0)):
        pass


def test_cli_serves_metrics(tmp_path: Path) -> None:
    assert (
        "--metrics-port N"
        in subprocess.run(
            [sys.executable, "-m", "onceflow", "broker", "--help"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    process = subprocess.Popen(
        [
            sys.executable, "-m", "onceflow", "broker", "--port", "0",
            "--metrics-port", "0", "--data-dir", str(tmp_path / "data"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        process.stdout.readline()  # the listening line
        line = process.stdout.readline()
        assert line.startswith("metrics at http://127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        assert value(scrape(port), "onceflow_broker_open_transactions") == 0
    finally:
        process.terminate()
        assert process.wait(TIMEOUT) == 0


def test_scrape_of_a_stuck_broker_serves_the_counters(
    broker: BrokerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_module, "SNAPSHOT_TIMEOUT_SECONDS", 0.5)
    port = metrics_port(broker)
    create_topics(broker.bootstrap, "stuck")
    release = threading.Event()
    assert broker.broker.loop is not None
    # Block the broker's event loop the way a long synchronous step would.
    broker.broker.loop.call_soon_threadsafe(release.wait, TIMEOUT)
    try:
        samples = scrape(port)
    finally:
        release.set()
    assert value(samples, "onceflow_broker_requests_total", api="CreateTopics") == 1
    assert not any(name == "onceflow_broker_partition_high_watermark" for name, _ in samples)
    # Once the loop runs again, so does the state collector.
    assert ("onceflow_broker_partition_high_watermark", _partition0("stuck")) in scrape(port)
