"""Storage failures: a failed fsync or a full disk takes the data dir offline (fail-stop),
and fsync gates every acknowledgement. Faults are injected into a broker process through
``onceflow.broker.log.disk`` (ONCEFLOW_DISK_FAULTS), the broker's one fault point."""

from __future__ import annotations

import json
import selectors
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kio.schema.errors import ErrorCode
from txn_wire import TxnProducer, offset_commit_request
from wire import WireClient, values_batch

from onceflow.broker.log.disk import FAULTS_ENV
from onceflow.testing import BrokerProcess

OFFLINE_LINE = "storage failure, data dir offline until restart"


def faulty_broker(
    factory: Callable[..., BrokerProcess], tmp_path: Path, **faults: str
) -> BrokerProcess:
    return factory(env={FAULTS_ENV: json.dumps(faults)}, data_dir=tmp_path / "data")


def produce_value(client: WireClient, topic: str, value: bytes) -> ErrorCode:
    return client.produce(topic, 0, values_batch([value])).error_code


def assert_offline_logged_once(broker: BrokerProcess) -> None:
    """One clear line says the data dir went offline; no traceback anywhere."""
    lines = broker.log_path.read_text().splitlines()
    assert sum(OFFLINE_LINE in line for line in lines) == 1, lines
    assert not any("Traceback" in line for line in lines), lines


@pytest.mark.parametrize("fault", ["fsync_fail_while", "write_fail_while"])
def test_storage_failure_takes_the_data_dir_offline_for_good(
    onceflow_broker_process_factory: Callable[..., BrokerProcess], tmp_path: Path, fault: str
) -> None:
    switch = tmp_path / "disk-fails"
    broker = faulty_broker(onceflow_broker_process_factory, tmp_path, **{fault: str(switch)})
    with WireClient.connect(broker.bootstrap) as client:
        client.ensure_topic("t")
        assert produce_value(client, "t", b"before") == ErrorCode.none

        switch.touch()
        assert produce_value(client, "t", b"failed") == ErrorCode.kafka_storage_error
        # The disk "recovers": a retried fsync would now succeed and prove nothing about
        # the pages the failed one dropped, so the data dir stays offline.
        switch.unlink()
        assert produce_value(client, "t", b"after") == ErrorCode.kafka_storage_error
        assert client.fetch("t", 0, 0).error_code == ErrorCode.kafka_storage_error
        assert client.list_offsets("t", 0, -1).error_code == ErrorCode.kafka_storage_error
        committed = client.request(offset_commit_request("g", {("t", 0): 1}))
        assert committed.topics[0].partitions[0].error_code == ErrorCode.coordinator_not_available

    assert_offline_logged_once(broker)

    broker.kill()
    broker.start()
    with WireClient.connect(broker.bootstrap) as client:
        values = [v for _, v in client.fetch_values("t", 0)]
    # What was acknowledged is there; what was refused while offline never got written
    # (the failed one may or may not be: it was never acknowledged).
    assert values[0] == b"before"
    assert b"after" not in values


def test_a_failed_fsync_fails_every_waiting_coordinator_request(
    onceflow_broker_process_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    switch = tmp_path / "disk-fails"
    broker = faulty_broker(onceflow_broker_process_factory, tmp_path, fsync_fail_while=str(switch))
    with WireClient.connect(broker.bootstrap) as client:
        client.ensure_topic("t")
    producer = TxnProducer(broker.bootstrap, "txn")
    producer.add_partitions([("t", 0)])
    producer.produce("t", 0, [b"in-txn"])
    switch.touch()
    assert producer.end_txn(commit=True) == ErrorCode.coordinator_not_available
    response = producer.wire.request(producer.txn_offset_commit_request("g", {("t", 0): 1}))
    assert response.topics[0].partitions[0].error_code == ErrorCode.coordinator_not_available
    producer.close()
    assert_offline_logged_once(broker)


def _answered(clients: list[WireClient], timeout: float) -> list[WireClient]:
    with selectors.DefaultSelector() as selector:
        for client in clients:
            selector.register(client.sock, selectors.EVENT_READ, client)
        return [key.data for key, _ in selector.select(timeout)]


# How long the test watches for an answer that must not come while the gate is shut.
GATE_WATCH_SECONDS = 2.0


def test_no_acknowledgement_before_fsync(
    onceflow_broker_process_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    gate = tmp_path / "fsync-gate"
    broker = faulty_broker(onceflow_broker_process_factory, tmp_path, fsync_block_while=str(gate))
    with WireClient.connect(broker.bootstrap) as setup:
        setup.ensure_topic("t")
    offsets_txn = TxnProducer(broker.bootstrap, "offsets-txn")
    offsets_txn.add_offsets("g-txn")
    commit_txn = TxnProducer(broker.bootstrap, "commit-txn")
    commit_txn.add_partitions([("t", 0)])
    commit_txn.produce("t", 0, [b"committed"])

    gate.touch()
    # Staged offsets are stored only by the commit, whose PREPARE record repeats them:
    # they are answered once journaled, and their transaction's EndTxn waits.
    offsets_txn.txn_offset_commit("g-txn", {("t", 0): 1})
    producer, committer = WireClient.connect(broker.bootstrap), WireClient.connect(broker.bootstrap)
    sent = {
        "Produce": (
            producer,
            producer.send(producer.produce_request("t", 0, values_batch([b"x"]))),
        ),
        "OffsetCommit": (
            committer,
            committer.send(offset_commit_request("g", {("t", 0): 1})),
        ),
        "EndTxn with offsets": (
            offsets_txn.wire,
            offsets_txn.wire.send(offsets_txn.end_txn_request(True)),
        ),
        "EndTxn": (commit_txn.wire, commit_txn.wire.send(commit_txn.end_txn_request(True))),
    }
    clients = [client for client, _ in sent.values()]
    assert _answered(clients, GATE_WATCH_SECONDS) == []

    gate.unlink()
    produced = producer.receive(0, 9, sent["Produce"][1])
    assert produced.responses[0].partition_responses[0].error_code == ErrorCode.none
    committed = committer.receive(8, 8, sent["OffsetCommit"][1])
    assert committed.topics[0].partitions[0].error_code == ErrorCode.none
    staged = offsets_txn.wire.receive(26, 1, sent["EndTxn with offsets"][1])
    assert staged.error_code == ErrorCode.none
    ended = commit_txn.wire.receive(26, 1, sent["EndTxn"][1])
    assert ended.error_code == ErrorCode.none
    for client in (producer, committer, offsets_txn, commit_txn):
        client.close()


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root: the injected write failure above covers ENOSPC where
    mounting is not allowed)."""
    mount_point = tmp_path / "small-fs"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "--lazy", str(mount_point)], check=False)


# Enough to fill 1 MiB several times over: the loop ends at the first refusal.
MAX_BATCHES = 1000


def test_full_disk_refuses_then_recovers_everything_acknowledged(
    small_filesystem: Path,
    onceflow_broker_process_factory: Callable[..., BrokerProcess],
    tmp_path: Path,
) -> None:
    broker = onceflow_broker_process_factory(
        data_dir=small_filesystem / "data", log_path=tmp_path / "broker.log"
    )
    acknowledged = []
    with WireClient.connect(broker.bootstrap) as client:
        client.ensure_topic("t")
        for i in range(MAX_BATCHES):
            value = b"%06d" % i + b"x" * 4000
            error = produce_value(client, "t", value)
            if error != ErrorCode.none:
                break
            acknowledged.append(value)
        assert error == ErrorCode.kafka_storage_error
        assert 0 < len(acknowledged) < MAX_BATCHES
        assert produce_value(client, "t", b"small") == ErrorCode.kafka_storage_error
    assert_offline_logged_once(broker)

    broker.kill()
    # Space comes back; a restart recovers what was acknowledged (and cuts any torn tail).
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_filesystem)], check=True)
    broker.start()
    with WireClient.connect(broker.bootstrap) as client:
        values = [v for _, v in client.fetch_values("t", 0)]
        assert values[: len(acknowledged)] == acknowledged
        assert produce_value(client, "t", b"after") == ErrorCode.none
