"""Rolling a segment does not stall the broker: its directory sync and the producer
snapshot are written off the event loop, so other clients are served meanwhile."""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kio.schema.errors import ErrorCode
from wire import WireClient, values_batch

from onceflow.broker.log.disk import FAULTS_ENV
from onceflow.testing import BrokerProcess

SEGMENT_BYTES = 256 * 1024
LARGE_VALUE = b"r" * (60 * 1024)  # a roll every ~4 produces
PROBES = 300
# Bounds the wait for a roll's files once the gate opens.
SETTLE_SECONDS = 30.0


def rolling_broker(factory: Callable[..., BrokerProcess], tmp_path: Path, **faults: str) -> Any:
    env = {FAULTS_ENV: json.dumps(faults)} if faults else {}
    return factory(
        env=env,
        data_dir=tmp_path / "data",
        extra_args=("--segment-bytes", str(SEGMENT_BYTES)),
    )


def segments(broker: BrokerProcess, topic: str) -> list[str]:
    return sorted(p.name for p in (broker.data_dir / f"{topic}-0").glob("*.log"))


def test_a_roll_whose_files_cannot_sync_leaves_the_event_loop_serving(
    onceflow_broker_process_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    """With every sync of the rolling partition held, a produce that rolls it waits, but
    other requests are answered: no sync of the roll runs on the event loop."""
    gate = tmp_path / "roll-gate"
    broker = rolling_broker(
        onceflow_broker_process_factory,
        tmp_path,
        fsync_block_while=str(gate),
        paths="/rolling-0",
    )
    with (
        WireClient.connect(broker.bootstrap) as roller,
        WireClient.connect(broker.bootstrap) as other,
    ):
        roller.ensure_topic("rolling")
        other.ensure_topic("other")
        for _ in range(SEGMENT_BYTES // len(LARGE_VALUE)):
            assert roller.produce("rolling", 0, values_batch([LARGE_VALUE])).error_code == 0
        assert len(segments(broker, "rolling")) == 1

        gate.touch()
        sent = roller.send(roller.produce_request("rolling", 0, values_batch([LARGE_VALUE])))
        deadline = time.monotonic() + SETTLE_SECONDS
        while len(segments(broker, "rolling")) < 2:
            assert time.monotonic() < deadline, "the produce never rolled the segment"
        # The loop is free: requests that need no fsync round are answered at once.
        # (A produce elsewhere waits: fsync rounds run one at a time.)
        assert other.metadata(["other"]).topics[0].error_code == ErrorCode.none
        assert other.fetch("other", 0, 0).error_code == ErrorCode.none

        gate.unlink()
        rolled = roller.receive(0, 9, sent).responses[0].partition_responses[0]
        assert rolled.error_code == ErrorCode.none
        snapshot = broker.data_dir / "rolling-0" / "producers.snapshot"
        deadline = time.monotonic() + SETTLE_SECONDS
        while not snapshot.exists():
            assert time.monotonic() < deadline, "the roll's producer snapshot never landed"
        assert json.loads(snapshot.read_text())["offset"] == rolled.base_offset


def fsync_seconds(directory: Path, samples: int = 50) -> float:
    """Median fdatasync of a 4 KiB write on the data dir's filesystem."""
    probe = directory / "fsync-probe"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o644)
    times = []
    try:
        for i in range(samples):
            os.pwrite(fd, b"p" * 4096, i * 4096)
            started = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        probe.unlink()
    return statistics.median(times)


# A probe may wait for the round in progress and its own: "a few fsyncs", plus the
# processing of the roller's batch in the same round and the test client's own wire
# code. The worst probe on a loaded 2-core machine is dominated by scheduling delays
# (measured 17-92 ms with and without segment rolls), so the bound on it only catches
# a stall far beyond any fsync; the 95th percentile carries the few-fsyncs bound.
FSYNC_ALLOWANCE = 8
CLIENT_ALLOWANCE_SECONDS = 0.005
STALL_SECONDS = 0.25


def test_worst_produce_latency_while_another_client_rolls_segments(
    onceflow_broker_process_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    broker = rolling_broker(onceflow_broker_process_factory, tmp_path)
    stop = threading.Event()
    rolled = []

    def roll_continuously() -> None:
        with WireClient.connect(broker.bootstrap) as roller:
            while not stop.is_set():
                answer = roller.produce("rolling", 0, values_batch([LARGE_VALUE]))
                assert answer.error_code == ErrorCode.none
                rolled.append(answer.base_offset)

    with WireClient.connect(broker.bootstrap) as probe:
        probe.ensure_topic("rolling")
        probe.ensure_topic("probe")
        roller = threading.Thread(target=roll_continuously)
        roller.start()
        latencies = []
        try:
            for i in range(PROBES):
                started = time.perf_counter()
                answer = probe.produce("probe", 0, values_batch([b"probe-%d" % i]))
                latencies.append(time.perf_counter() - started)
                assert answer.error_code == ErrorCode.none
        finally:
            stop.set()
            roller.join(SETTLE_SECONDS)
    rolls = len(segments(broker, "rolling")) - 1
    fsync = fsync_seconds(tmp_path)
    worst = max(latencies)
    p95 = statistics.quantiles(latencies, n=20)[-1]
    print(
        f"{PROBES} probes over {rolls} rolls: median {statistics.median(latencies) * 1e3:.2f}"
        f" ms, p95 {p95 * 1e3:.2f} ms, worst {worst * 1e3:.2f} ms; fsync {fsync * 1e3:.2f} ms"
    )
    assert rolls >= 5, "too few rolls to measure anything"
    assert p95 <= FSYNC_ALLOWANCE * fsync + CLIENT_ALLOWANCE_SECONDS
    assert worst <= STALL_SECONDS
