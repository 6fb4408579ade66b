"""EndTxn is answered once the decision is durable; the markers follow. While they are
not durable, read_committed stops before the transaction and the producer's next
transactional request meets CONCURRENT_TRANSACTIONS. Marker durability is held back by
the disk fault point (ONCEFLOW_DISK_FAULTS fsync_block_while, for the partition only)."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kio.schema.errors import ErrorCode
from txn_wire import INIT_PRODUCER_ID, TxnProducer
from wire import READ_COMMITTED, WireClient, decode_batches, request_module

from onceflow.broker.log.disk import FAULTS_ENV
from onceflow.broker.protocol import build
from onceflow.testing import BrokerProcess

TOPIC = "held"
CONTROL_ATTRIBUTE = 0x20
# Bounds the wait for the markers' round once the gate opens.
SETTLE_SECONDS = 30.0


def committed_view(client: WireClient) -> tuple[list[bytes], int, int]:
    """(values a read_committed consumer takes from one fetch, its LSO, the high
    watermark): data batches, without those of the aborted transactions it lists."""
    data = client.fetch(TOPIC, 0, 0, isolation_level=READ_COMMITTED)
    assert data.error_code == ErrorCode.none, data
    # As a consumer does: a producer's batches from an aborted transaction's first
    # offset up to its next marker are skipped.
    starts = sorted((t.first_offset, t.producer_id) for t in data.aborted_transactions or ())
    aborting: set[int] = set()
    values = []
    for batch in decode_batches(data.records or b""):
        while starts and starts[0][0] <= batch.base_offset:
            aborting.add(starts.pop(0)[1])
        if batch.attributes & CONTROL_ATTRIBUTE:
            aborting.discard(batch.producer_id)
        elif batch.producer_id not in aborting:
            values += [record.value for record in batch.records]
    return values, data.last_stable_offset, data.high_watermark


def wait_for_high_watermark(
    client: WireClient, high_watermark: int
) -> tuple[list[bytes], int, int]:
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        view = committed_view(client)
        if view[2] >= high_watermark:
            return view
    raise AssertionError(f"high watermark {high_watermark} not reached in {SETTLE_SECONDS}s")


def next_transaction_starts(producer: TxnProducer) -> list[ErrorCode]:
    """AddPartitionsToTxn of the producer's next transaction, retried (as clients do)
    while the coordinator answers CONCURRENT_TRANSACTIONS."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        errors = producer.try_add_partitions([(TOPIC, 0)])
        if errors != [ErrorCode.concurrent_transactions]:
            return errors
    raise AssertionError("the transaction never completed")


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "abort"])
def test_end_txn_answers_before_markers_and_read_committed_waits_for_them(
    onceflow_broker_process_factory: Callable[..., BrokerProcess], tmp_path: Path, commit: bool
) -> None:
    gate = tmp_path / "marker-gate"
    faults = {"fsync_block_while": str(gate), "paths": f"/{TOPIC}-0/"}
    broker = onceflow_broker_process_factory(
        env={FAULTS_ENV: json.dumps(faults)}, data_dir=tmp_path / "data"
    )
    with WireClient.connect(broker.bootstrap) as client:
        client.ensure_topic(TOPIC)
        producer = TxnProducer(broker.bootstrap, "held-txn")
        producer.add_partitions([(TOPIC, 0)])
        assert producer.produce(TOPIC, 0, [b"a", b"b"]) == 0

        gate.touch()  # from here the partition's files are not synced
        # Answered although the markers cannot be durable: only the PREPARE record is.
        assert producer.end_txn(commit) == ErrorCode.none
        values, stable, high = committed_view(client)
        assert (values, stable, high) == ([], 0, 2)
        # The transaction is not complete: its producer must wait (clients retry).
        assert producer.try_add_partitions([(TOPIC, 0)]) == [ErrorCode.concurrent_transactions]
        assert producer.end_txn(commit) == ErrorCode.concurrent_transactions
        assert committed_view(client) == ([], 0, 2)

        gate.unlink()
        values, stable, high = wait_for_high_watermark(client, high_watermark=3)
        assert values == ([b"a", b"b"] if commit else [])
        assert stable == high == 3
        assert next_transaction_starts(producer) == [ErrorCode.none]
        producer.close()


def admitted_connection(bootstrap: str) -> WireClient:
    """A connection the broker keeps (under --max-connections-per-ip, it refuses one
    while the slot of a connection closed by the client is not given back yet)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        client = WireClient.connect(bootstrap)
        # A refused connection is closed at once; a kept one stays silent.
        if not client.closed_by_peer(timeout=0.2):
            return client
        client.close()
    raise AssertionError("the broker never gave back the closed connection's slot")


def init_producer_id(client: WireClient, transactional_id: str) -> tuple[int, int]:
    """InitProducerId, retried while the coordinator answers CONCURRENT_TRANSACTIONS (as
    clients do): (producer id, epoch)."""
    m = request_module(INIT_PRODUCER_ID, 4)
    request = build(
        m.InitProducerIdRequest,
        transactional_id=transactional_id,
        transaction_timeout=datetime.timedelta(seconds=60),
        producer_id=-1,
        producer_epoch=-1,
    )
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        response = client.request(request)
        if response.error_code != ErrorCode.concurrent_transactions:
            assert response.error_code == ErrorCode.none, response
            return response.producer_id, response.producer_epoch
    raise AssertionError("the previous transaction never completed")


def test_a_producer_gone_while_its_commit_is_made_durable_still_commits(
    onceflow_broker_process_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    """A client that closes its connection while EndTxn waits for the PREPARE record's
    fsync gives up its answer only: the decision and the markers still happen, so the
    producer's next incarnation is served and read_committed sees the records. (The
    answer's cancellation used to cancel the decision too, leaving the transaction
    prepared, and its id refused with CONCURRENT_TRANSACTIONS, until a restart.)"""
    gate = tmp_path / "decision-gate"
    faults = {"fsync_block_while": str(gate), "paths": "transactions.journal"}
    broker = onceflow_broker_process_factory(
        env={FAULTS_ENV: json.dumps(faults)},
        data_dir=tmp_path / "data",
        # This test's client and its producer: a third connection is refused until the
        # broker has let go of the producer's.
        extra_args=("--max-connections-per-ip", "2"),
    )
    with WireClient.connect(broker.bootstrap) as client:
        client.ensure_topic(TOPIC)
        producer = TxnProducer(broker.bootstrap, "gone-txn")
        producer.add_partitions([(TOPIC, 0)])
        assert producer.produce(TOPIC, 0, [b"a", b"b"]) == 0

        gate.touch()  # from here the decision cannot be durable
        producer.wire.send(producer.end_txn_request(commit=True))
        producer.close()  # without reading the answer
        # Once the broker has let go of the producer's connection, it has dropped the
        # pending answer: only then may the decision be durable.
        with admitted_connection(broker.bootstrap) as successor:
            gate.unlink()
            producer_id, epoch = init_producer_id(successor, "gone-txn")
        assert (producer_id, epoch) == (producer.producer_id, producer.epoch + 1)
        values, stable, high = wait_for_high_watermark(client, high_watermark=3)
        assert values == [b"a", b"b"]
        assert stable == high == 3


def second_transaction_open_then_killed(
    factory: Callable[..., BrokerProcess], data: Path, transactional_id: str
) -> TxnProducer:
    """A committed transaction ("first", its markers durable), then a second one of the
    same producer with its data ("second") written and left open; the broker killed.
    Returns the producer (its connection closed), which still holds its epoch."""
    broker = factory(data_dir=data)
    with WireClient.connect(broker.bootstrap) as client:
        client.ensure_topic(TOPIC)
        producer = TxnProducer(broker.bootstrap, transactional_id)
        producer.add_partitions([(TOPIC, 0)])
        assert producer.produce(TOPIC, 0, [b"first"]) == 0
        assert producer.end_txn(commit=True) == ErrorCode.none
        assert wait_for_high_watermark(client, high_watermark=2)[0] == [b"first"]
        assert next_transaction_starts(producer) == [ErrorCode.none]
        assert producer.produce(TOPIC, 0, [b"second"]) == 2  # acknowledged: durable
        producer.close()
    broker.kill()
    return producer


def power_loss_keeps_the_journal_through(data: Path, state: str) -> None:
    """Cut the transaction journal after its last record in ``state`` (a power loss may
    keep no more of its unsynced tail) and make the next start a new boot."""
    journal = data / "transactions.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    states = [json.loads(line.split(b" ", 1)[1])["state"] for line in lines]
    last = max(i for i, s in enumerate(states) if s == state)
    assert states[-1] == "Ongoing" and last < len(lines) - 1, f"nothing after {state} to lose"
    journal.write_bytes(b"".join(lines[: last + 1]))
    run_state = data / "transactions.run"
    run_state.write_text(json.dumps({"boot_id": "the-boot-before-the-power-cut", "clean": False}))


def test_recovery_completes_a_prepared_transaction_only_where_it_is_still_open(
    onceflow_broker_process_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    """A flush round syncs a partition and the transaction journal side by side, so a
    power loss can keep the one and not the other: the partition holds a transaction's
    marker and then the next transaction's acknowledged data, open under the same
    producer id and epoch, while the journal ends at the first one's PREPARE_COMMIT.
    Recovery completes that transaction where its own data is still open, and must not
    commit the next one's, which its producer never asked to commit."""
    data = tmp_path / "data"
    second_transaction_open_then_killed(onceflow_broker_process_factory, data, "torn-txn")
    power_loss_keeps_the_journal_through(data, "PrepareCommit")

    restarted = onceflow_broker_process_factory(data_dir=data)
    with WireClient.connect(restarted.bootstrap) as client:
        deadline = time.monotonic() + SETTLE_SECONDS
        values, stable, high = committed_view(client)
        while stable < high and time.monotonic() < deadline:
            values, stable, high = committed_view(client)
        assert stable == high, "the second transaction was left open"
        assert values == [b"first"]


def test_after_a_power_loss_a_transaction_the_journal_lost_cannot_commit(
    onceflow_broker_process_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    """AddPartitionsToTxn is journaled without an fsync, so a power loss can take the
    record that a second transaction began while its acknowledged data stays. Recovery
    aborts that data as hanging; the producer, which still holds its epoch, must then
    be refused its commit. Before fencing every producer after a power loss, the EndTxn
    met the first transaction's CompleteCommit and was answered as a retry of it: the
    producer was told the second transaction committed, and its inputs were lost."""
    data = tmp_path / "data"
    producer = second_transaction_open_then_killed(
        onceflow_broker_process_factory, data, "lost-begin"
    )
    power_loss_keeps_the_journal_through(data, "CompleteCommit")

    restarted = onceflow_broker_process_factory(data_dir=data)
    producer.wire = WireClient.connect(restarted.bootstrap)
    try:
        # EndTxn v1 predates PRODUCER_FENCED: it says INVALID_PRODUCER_EPOCH, as Kafka.
        assert producer.end_txn(commit=True) == ErrorCode.invalid_producer_epoch
    finally:
        producer.close()
    with WireClient.connect(restarted.bootstrap) as client:
        values, stable, high = committed_view(client)
        assert (values, stable) == ([b"first"], high)
