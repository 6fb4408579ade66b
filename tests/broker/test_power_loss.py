"""Power loss: a kill -9 keeps the page cache, so it cannot tell an fsynced broker from one
that only wrote. Here the data dir is cut back to what was fsynced (power_loss.py) and
recovered: everything acknowledged must be there with --flush always, and the same run
must show the loss with --flush never (so the test can catch a broker that lies)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from group_wire import GroupClient
from kio.schema.errors import ErrorCode
from power_loss import rebuild_after_power_loss
from txn_wire import TxnProducer, offset_commit_request
from wire import WireClient, values_batch

from onceflow.broker.log.disk import FAULTS_ENV
from onceflow.testing import BrokerProcess

BATCHES = 240
COMMIT_EVERY = 10
TXN_EVERY = 40
# Small segments, so that the run rolls several and creates files mid-run.
SEGMENT_BYTES = "4096"


@dataclass
class Acknowledged:
    """What the broker said yes to during the run."""

    values: set[bytes] = field(default_factory=set)
    committed_offset: int = -1
    txn_values: set[bytes] = field(default_factory=set)
    txn_committed_offset: int = -1


def run_workload(bootstrap: str) -> Acknowledged:
    acked = Acknowledged()
    with WireClient.connect(bootstrap) as client:
        client.ensure_topic("plain")
        txn = TxnProducer(bootstrap, "power-txn")
        for i in range(BATCHES):
            value = b"v%d" % i
            answer = client.produce("plain", 0, values_batch([value, value + b"-2"]))
            assert answer.error_code == ErrorCode.none, answer
            acked.values |= {value, value + b"-2"}
            if i % COMMIT_EVERY == 0:
                response = client.request(offset_commit_request("plain-group", {("plain", 0): i}))
                assert response.topics[0].partitions[0].error_code == ErrorCode.none
                acked.committed_offset = i
            if i % TXN_EVERY == 0:
                # The first one also creates the topic mid-run.
                client.ensure_topic("txn-out")
                txn.add_partitions([("txn-out", 0)])
                txn.produce("txn-out", 0, [b"t%d" % i])
                txn.add_offsets("txn-group")
                txn.txn_offset_commit("txn-group", {("plain", 0): i})
                assert txn.end_txn(commit=True) == ErrorCode.none
                acked.txn_values.add(b"t%d" % i)
                acked.txn_committed_offset = i
        txn.close()
    return acked


def readable_values(client: WireClient, topic: str) -> set[bytes | None]:
    """Every value a consumer can read from partition 0, from its start."""
    try:
        return {v for _, v in client.fetch_values(topic, 0)}
    except AssertionError:
        # The log has offsets below its high watermark that no batch holds any more (the
        # files behind them were cut): nothing can be read.
        return set()


def lost_after_recovery(bootstrap: str, acked: Acknowledged) -> list[str]:
    """What the recovered broker no longer has of what it acknowledged."""
    lost = []
    with WireClient.connect(bootstrap) as client:
        if missing := acked.values - readable_values(client, "plain"):
            lost.append(f"{len(missing)} of {len(acked.values)} acknowledged records")
        txn_values = set()
        if client.metadata(["txn-out"]).topics[0].error_code == ErrorCode.none:
            txn_values = readable_values(client, "txn-out")
        if missing := acked.txn_values - txn_values:
            lost.append(f"{len(missing)} of {len(acked.txn_values)} committed transactions")
    for group, offset in [
        ("plain-group", acked.committed_offset),
        ("txn-group", acked.txn_committed_offset),
    ]:
        with GroupClient(bootstrap, group) as admin:
            if admin.committed("plain", 0) != offset:
                lost.append(f"{group}'s committed offset {offset}")
    return lost


@pytest.mark.parametrize("flush", ["always", "never"])
def test_power_loss_keeps_everything_acknowledged(
    onceflow_broker_process_factory: Callable[..., BrokerProcess], tmp_path: Path, flush: str
) -> None:
    record = tmp_path / "fsynced.jsonl"
    broker = onceflow_broker_process_factory(
        data_dir=tmp_path / "data",
        flush=flush,
        extra_args=("--segment-bytes", SEGMENT_BYTES),
        env={FAULTS_ENV: json.dumps({"fsync_record": str(record)})},
    )
    acked = run_workload(broker.bootstrap)
    assert len(list((tmp_path / "data" / "plain-0").glob("*.log"))) > 3  # rolled
    broker.kill()

    rebuild_after_power_loss(tmp_path / "data", record, tmp_path / "after-power-loss")
    recovered = onceflow_broker_process_factory(data_dir=tmp_path / "after-power-loss", flush=flush)
    lost = lost_after_recovery(recovered.bootstrap, acked)
    if flush == "always":
        assert lost == []
    else:
        # Not durable by design: the same check sees what a lying broker would lose.
        assert lost, "--flush never lost nothing: the power-loss model is too kind"
