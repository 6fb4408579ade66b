"""Topic creation, producer id reservations and DeleteRecords write their files off the
event loop: with the sync of that one file held on a gate, the request that wrote it
waits, but other clients are answered meanwhile. Each answer comes once the gate
opens (the write is durable). Gates through ONCEFLOW_DISK_FAULTS, as in
test_roll_latency.py."""

from __future__ import annotations

import contextlib
import datetime
import json
import select
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from kio.schema.errors import ErrorCode
from txn_wire import offset_commit_request
from wire import WireClient, request_module, values_batch

from onceflow.broker.log.disk import FAULTS_ENV
from onceflow.testing import BrokerProcess

# Bounds the wait for the broker to reach the gated sync.
SETTLE_SECONDS = 30.0
SECOND = datetime.timedelta(seconds=1)


def gated_broker(
    factory: Callable[..., BrokerProcess], tmp_path: Path, paths: str
) -> tuple[BrokerProcess, Path]:
    """A broker whose syncs of files whose path contains ``paths`` wait on the gate."""
    gate = tmp_path / "gate"
    faults = {"fsync_block_while": str(gate), "paths": paths}
    broker = factory(env={FAULTS_ENV: json.dumps(faults)}, data_dir=tmp_path / "data")
    return broker, gate


def wait_for(path: Path) -> None:
    """Until the broker has written ``path`` (the file whose sync the gate holds)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} was never written"


@contextlib.contextmanager
def two_clients(broker: BrokerProcess) -> Iterator[tuple[WireClient, WireClient]]:
    """The client whose request waits on the gate, and another with its own topic."""
    with (
        WireClient.connect(broker.bootstrap) as waiting,
        WireClient.connect(broker.bootstrap) as other,
    ):
        other.ensure_topic("other")
        yield waiting, other


def assert_served_meanwhile(other: WireClient, waiting: WireClient) -> None:
    """Another client's Metadata and Fetch are answered while ``waiting`` gets nothing:
    the loop is free although the sync is held."""
    assert other.metadata(["other"]).topics[0].error_code == ErrorCode.none
    assert other.fetch("other", 0, 0).error_code == ErrorCode.none
    readable, _, _ = select.select([waiting.sock], [], [], 0)
    assert readable == [], "answered before its write was durable"


def _listed(client: WireClient) -> set[str]:
    m = request_module(3, 4)
    response = client.request(m.MetadataRequest(topics=None, allow_auto_topic_creation=False))
    return {t.name for t in response.topics}


def test_topic_creation_syncs_off_the_loop(
    onceflow_broker_process_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    broker, gate = gated_broker(onceflow_broker_process_factory, tmp_path, "topics.json")
    with two_clients(broker) as (creator, other):
        gate.touch()
        sent = creator.send(WireClient.create_topics_request("new", partitions=2))
        wait_for(broker.data_dir / "topics.json.tmp")
        assert_served_meanwhile(other, creator)
        # Invisible until durable: nothing may be appended to a topic a crash could lose.
        assert _listed(other) == {"other"}

        gate.unlink()
        created = creator.receive(19, 4, sent)
        assert created.topics[0].error_code == ErrorCode.none
        assert _listed(other) == {"other", "new"}
    broker.kill()
    broker.start()
    with WireClient.connect(broker.bootstrap) as client:
        topics = client.metadata(["new"]).topics
        assert [len(t.partitions) for t in topics] == [2]


def test_producer_id_reservation_syncs_off_the_loop(
    onceflow_broker_process_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    broker, gate = gated_broker(onceflow_broker_process_factory, tmp_path, "producer-ids")
    with two_clients(broker) as (producer, other):
        gate.touch()
        # A fresh broker has no block of ids reserved yet: the first id waits for one.
        m = request_module(22, 0)
        sent = producer.send(
            m.InitProducerIdRequest(transactional_id=None, transaction_timeout=SECOND)
        )
        wait_for(broker.data_dir / "producer-ids.json.tmp")
        assert_served_meanwhile(other, producer)

        gate.unlink()
        answer = producer.receive(22, 0, sent)
        assert (answer.error_code, answer.producer_id) == (ErrorCode.none, 0)
        # The next block is reserved ahead of need: later ids are answered at once.
        assert [other.init_producer_id()[0] for _ in range(3)] == [1, 2, 3]
    reserved = json.loads((broker.data_dir / "producer-ids.json").read_text())
    assert reserved["reserved_until"] >= 1000


def test_delete_records_syncs_off_the_loop(
    onceflow_broker_process_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    broker, gate = gated_broker(onceflow_broker_process_factory, tmp_path, "log-start-offset")
    with two_clients(broker) as (deleter, other):
        deleter.ensure_topic("t")
        assert deleter.produce("t", 0, values_batch([b"a", b"b", b"c"])).error_code == 0
        gate.touch()
        m = request_module(21, 1)
        sent = deleter.send(
            m.DeleteRecordsRequest(
                topics=(
                    m.DeleteRecordsTopic(
                        name="t",
                        partitions=(m.DeleteRecordsPartition(partition_index=0, offset=2),),
                    ),
                ),
                timeout=SECOND,
            )
        )
        wait_for(broker.data_dir / "t-0" / "log-start-offset.tmp")
        assert_served_meanwhile(other, deleter)

        gate.unlink()
        deleted = deleter.receive(21, 1, sent).topics[0].partitions[0]
        assert (deleted.error_code, deleted.low_watermark) == (ErrorCode.none, 2)
    broker.kill()
    broker.start()
    with WireClient.connect(broker.bootstrap) as client:
        assert client.list_offsets("t", 0, -2).offset == 2


PARTITIONS = 200
# Each round commits every partition (a ~6 KB journal record): the offsets journal
# reaches its 1 MiB compaction threshold after ~170 rounds.
MAX_COMMIT_ROUNDS = 2000


def _commit_round(client: WireClient, offset: int) -> None:
    request = offset_commit_request("g", {("t", p): offset for p in range(PARTITIONS)})
    answer = client.request(request)
    assert {p.error_code for t in answer.topics for p in t.partitions} == {ErrorCode.none}


def _committed(client: WireClient) -> set[int]:
    m = request_module(9, 1)
    topic = m.OffsetFetchRequestTopic(name="t", partition_indexes=tuple(range(PARTITIONS)))
    answer = client.request(m.OffsetFetchRequest(group_id="g", topics=(topic,)))
    return {p.committed_offset for t in answer.topics for p in t.partitions}


def test_offsets_journal_compaction_syncs_off_the_loop(
    onceflow_broker_process_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    """The rewrite's sync is held: commits are still answered (they go on to the old
    journal, and are copied into the new one), and so are other clients."""
    broker, gate = gated_broker(
        onceflow_broker_process_factory, tmp_path, "group-offsets.journal.tmp"
    )
    journal = broker.data_dir / "group-offsets.journal"
    new_journal = journal.with_name(journal.name + ".tmp")
    with two_clients(broker) as (committer, other):
        created = committer.request(WireClient.create_topics_request("t", PARTITIONS))
        assert created.topics[0].error_code == ErrorCode.none
        gate.touch()
        rounds = 0
        while not new_journal.exists():
            assert rounds < MAX_COMMIT_ROUNDS, "the offsets journal was never compacted"
            _commit_round(committer, rounds)
            rounds += 1
        uncompacted = journal.stat().st_size
        for _ in range(3):
            _commit_round(committer, rounds)
            rounds += 1
        assert other.metadata(["other"]).topics[0].error_code == ErrorCode.none
        assert other.fetch("other", 0, 0).error_code == ErrorCode.none

        gate.unlink()
        deadline = time.monotonic() + SETTLE_SECONDS
        while new_journal.exists():
            assert time.monotonic() < deadline, "the compacted journal never replaced the old"
        _commit_round(committer, rounds)
    assert journal.stat().st_size < uncompacted / 4
    broker.kill()
    broker.start()
    with WireClient.connect(broker.bootstrap) as client:
        assert _committed(client) == {rounds}
