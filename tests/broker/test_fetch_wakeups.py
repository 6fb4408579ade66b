"""Long-polling fetches are woken by their own partitions' data only."""

from __future__ import annotations

import dataclasses
import datetime
import time
from pathlib import Path

from kio.schema.errors import ErrorCode
from wire import FETCH_VERSION, WireClient, decode_batches, values_batch

from onceflow.broker.config import BrokerConfig
from onceflow.broker.server import run_in_thread

FETCH = 1
# Longer than the test takes: an answer before it is a wake-up, not a timeout.
MAX_WAIT = datetime.timedelta(seconds=30)
PARK_TIMEOUT_SECONDS = 10.0
BUSY_APPENDS = 50


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
