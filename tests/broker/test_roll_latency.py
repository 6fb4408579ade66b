"""Rolling a segment does not stall the broker: its directory sync and the producer
snapshot are written off the event loop, so other clients are served meanwhile.
(The latency this buys is measured in bench/roll_latency.py.)"""

from __future__ import annotations

import json
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
