"""The group coordinator at the wire level: generations, member ids, timeouts, errors.

Raw requests (``group_wire.py``) play members that are stale, silent or plain wrong,
which real clients only are by accident. The broker runs in-process with a low
minimum session timeout so the timeout tests take about a second.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from group_wire import GroupClient
from kio.schema.errors import ErrorCode
from txn_wire import TxnProducer
from wire import WireClient

from onceflow.broker.config import BrokerConfig, FlushPolicy
from onceflow.broker.server import BrokerThread


def _config(data_dir: Path, **overrides: object) -> BrokerConfig:
    return BrokerConfig(
        data_dir=data_dir,
        port=0,
        flush=FlushPolicy.ALWAYS,
        group_min_session_timeout_ms=100,
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerThread]:
    with BrokerThread(_config(tmp_path / "data")) as running:
        with WireClient.connect(running.bootstrap) as client:
            client.ensure_topic("t")  # one partition, auto-created
        yield running


def _poll(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    """Call ``predicate`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _stable_pair(bootstrap: str, group: str, **join: object) -> tuple[GroupClient, GroupClient]:
    """Two members, A the leader, both synced in one generation."""
    a, b = GroupClient(bootstrap, group), GroupClient(bootstrap, group)
    assert a.join(**join).error_code == ErrorCode.none
    assert a.sync({a.member_id: b"a1"}).error_code == ErrorCode.none
    # B's join starts a rebalance; A learns of it by heartbeat and rejoins.
    pending_b = b.send_join(**join)
    first = b.receive_join(pending_b)
    assert first.error_code == ErrorCode.member_id_required
    pending_b = b.send_join(**join)
    assert a.heartbeat() == ErrorCode.rebalance_in_progress
    joined_a = a.join(**join)
    joined_b = b.receive_join(pending_b)
    assert joined_a.generation_id == joined_b.generation_id == 2
    assert joined_a.leader == a.member_id
    assert sorted(m.member_id for m in joined_a.members) == sorted([a.member_id, b.member_id])
    assert joined_b.members == ()  # only the leader gets the subscriptions
    pending_sync = b.send_sync()
    assert a.sync({a.member_id: b"a2", b.member_id: b"b2"}).assignment == b"a2"
    assert b.receive_sync(pending_sync).assignment == b"b2"
    return a, b


def test_join_asks_for_a_member_id_from_v4_on(broker: BrokerThread) -> None:
    with GroupClient(broker.bootstrap, "g") as client:
        first = client.receive_join(client.send_join(version=4))
        assert first.error_code == ErrorCode.member_id_required
        assert first.member_id
        second = client.receive_join(client.send_join(version=4))
        assert second.error_code == ErrorCode.none
        assert second.member_id == first.member_id == second.leader
        assert second.generation_id == 1
        assert [m.member_id for m in second.members] == [first.member_id]
    with GroupClient(broker.bootstrap, "old") as client:
        response = client.receive_join(client.send_join(version=3))
        assert response.error_code == ErrorCode.none and response.member_id


def test_generations_and_member_ids_are_enforced(broker: BrokerThread) -> None:
    a, b = _stable_pair(broker.bootstrap, "g")
    with a, b:
        assert a.commit({("t", 0): 5}) == {("t", 0): ErrorCode.none}
        assert a.committed("t", 0) == 5
        stale_generation = a.generation - 1
        assert a.commit({("t", 0): 6}, generation=stale_generation) == {
            ("t", 0): ErrorCode.illegal_generation
        }
        assert a.heartbeat(generation=stale_generation) == ErrorCode.illegal_generation
        assert a.commit({("t", 0): 6}, member_id="ghost") == {("t", 0): ErrorCode.unknown_member_id}
        assert a.heartbeat(member_id="ghost") == ErrorCode.unknown_member_id
        assert a.committed("t", 0) == 5

        # A third member: a rebalance starts. Members of the current generation may still
        # commit (they do so before rejoining) but are told to rejoin.
        c = GroupClient(broker.bootstrap, "g")
        with c:
            c.member_id = c.receive_join(c.send_join()).member_id  # MEMBER_ID_REQUIRED
            pending_c = c.send_join()
            assert b.heartbeat() == ErrorCode.rebalance_in_progress
            assert b.commit({("t", 0): 7}) == {("t", 0): ErrorCode.none}
            assert b.sync().error_code == ErrorCode.rebalance_in_progress
            pending_a, pending_b = a.send_join(), b.send_join()
            generations = {
                r.generation_id
                for r in (
                    a.receive_join(pending_a),
                    b.receive_join(pending_b),
                    c.receive_join(pending_c),
                )
            }
            assert generations == {3}
            # Joined but not yet synced: commits wait for the new assignment.
            assert b.commit({("t", 0): 8}) == {("t", 0): ErrorCode.rebalance_in_progress}
            assert b.commit({("t", 0): 8}, generation=2) == {("t", 0): ErrorCode.illegal_generation}
            pending_b, pending_c = b.send_sync(), c.send_sync()
            assert a.sync({a.member_id: b"x"}).error_code == ErrorCode.none
            assert b.receive_sync(pending_b).assignment == b""
            assert c.receive_sync(pending_c).error_code == ErrorCode.none
            assert b.commit({("t", 0): 9}) == {("t", 0): ErrorCode.none}
            assert a.committed("t", 0) == 9


def test_session_timeout_evicts_a_silent_member(broker: BrokerThread) -> None:
    a, b = _stable_pair(broker.bootstrap, "g", session_ms=600)
    with a, b:
        silent_since = time.monotonic()
        _poll(lambda: a.heartbeat() == ErrorCode.rebalance_in_progress, 5, "the eviction")
        assert time.monotonic() - silent_since >= 0.5
        rejoined = a.join(session_ms=600)
        assert rejoined.generation_id == 3
        assert [m.member_id for m in rejoined.members] == [a.member_id]
        assert b.heartbeat() == ErrorCode.unknown_member_id


def test_rebalance_timeout_bounds_the_wait_for_slow_joiners(broker: BrokerThread) -> None:
    join = {"session_ms": 30_000, "rebalance_ms": 800}
    a, b = _stable_pair(broker.bootstrap, "g", **join)
    with a, b, GroupClient(broker.bootstrap, "g") as c:
        assert c.receive_join(c.send_join(**join)).error_code == ErrorCode.member_id_required
        started = time.monotonic()
        pending_c, pending_a = c.send_join(**join), a.send_join(**join)
        joined_a, joined_c = a.receive_join(pending_a), c.receive_join(pending_c)
        waited = time.monotonic() - started
        # B is alive (its session is long) but never rejoined: dropped at the timeout.
        assert joined_a.generation_id == joined_c.generation_id == 3
        assert sorted(m.member_id for m in joined_a.members) == sorted([a.member_id, c.member_id])
        assert 0.6 <= waited < 5, waited
        assert b.heartbeat() == ErrorCode.unknown_member_id


def test_static_member_restart_keeps_generation_and_assignment(broker: BrokerThread) -> None:
    old = GroupClient(broker.bootstrap, "g")
    with old:
        joined = old.join(instance_id="pod-1")
        assert joined.error_code == ErrorCode.none  # static members skip MEMBER_ID_REQUIRED
        assert old.sync({old.member_id: b"mine"}, instance_id="pod-1").assignment == b"mine"
        generation = old.generation
    with GroupClient(broker.bootstrap, "g") as new:
        rejoined = new.join(instance_id="pod-1")
        assert rejoined.error_code == ErrorCode.none
        assert rejoined.generation_id == generation  # no rebalance
        assert new.member_id != old.member_id
        assert new.sync(instance_id="pod-1").assignment == b"mine"
        with GroupClient(broker.bootstrap, "g") as zombie:
            zombie.member_id, zombie.generation = old.member_id, generation
            assert zombie.heartbeat(instance_id="pod-1") == ErrorCode.fenced_instance_id
        assert new.heartbeat(instance_id="pod-1") == ErrorCode.none


def test_bad_group_requests_get_error_codes(broker: BrokerThread) -> None:
    with GroupClient(broker.bootstrap, "") as nameless:
        assert nameless.join().error_code == ErrorCode.invalid_group_id
    with GroupClient(broker.bootstrap, "g") as a, GroupClient(broker.bootstrap, "g") as b:
        assert a.join(session_ms=10).error_code == ErrorCode.invalid_session_timeout
        assert a.join().error_code == ErrorCode.none
        assert b.join(protocols=(("other", b""),)).error_code == (
            ErrorCode.inconsistent_group_protocol
        )
        assert a.sync({a.member_id: b""}).error_code == ErrorCode.none
        assert a.commit({("nope", 0): 1}) == {("nope", 0): ErrorCode.unknown_topic_or_partition}
        assert a.commit({("t", 3): 1}) == {("t", 3): ErrorCode.unknown_topic_or_partition}
    with GroupClient(broker.bootstrap, "unknown-group") as stranger:
        stranger.member_id, stranger.generation = "someone", 4
        assert stranger.heartbeat() == ErrorCode.unknown_member_id
        assert stranger.sync().error_code == ErrorCode.unknown_member_id
        assert stranger.leave() == ErrorCode.unknown_member_id
        assert stranger.commit({("t", 0): 1}) == {("t", 0): ErrorCode.illegal_generation}
        stranger.member_id, stranger.generation = "", -1
        assert stranger.commit({("t", 0): 1}, metadata="x" * 5000) == {
            ("t", 0): ErrorCode.offset_metadata_too_large
        }
        assert stranger.find_coordinator(key_type=9).error_code == ErrorCode.invalid_request
        found = stranger.find_coordinator(version=0)
        assert (found.error_code, found.port) == (ErrorCode.none, broker.broker.port)
        # Still serving after all that.
        assert stranger.commit({("t", 0): 1}) == {("t", 0): ErrorCode.none}


def test_offsets_keep_metadata_and_leader_epoch_across_versions(broker: BrokerThread) -> None:
    with WireClient.connect(broker.bootstrap) as client:
        client.ensure_topic("u")
    with GroupClient(broker.bootstrap, "standalone") as client:
        assert client.commit({("t", 0): 11}, version=2, metadata="v2") == {("t", 0): ErrorCode.none}
        assert client.commit({("u", 0): 22}, metadata="v8", leader_epoch=3) == {
            ("u", 0): ErrorCode.none
        }
        v1 = client.fetch_offsets([("t", 0), ("u", 0), ("u", 7)], version=1)
        assert (v1[("t", 0)].committed_offset, v1[("t", 0)].metadata) == (11, "v2")
        assert v1[("u", 7)].committed_offset == -1
        everything = client.fetch_offsets(None)
        assert set(everything) == {("t", 0), ("u", 0)}
        assert everything[("u", 0)].committed_leader_epoch == 3
        assert everything[("u", 0)].metadata == "v8"


def test_describe_and_list_groups(broker: BrokerThread) -> None:
    a, b = _stable_pair(broker.bootstrap, "busy")
    with a, b, GroupClient(broker.bootstrap, "idle") as idle:
        assert idle.commit({("t", 0): 1}) == {("t", 0): ErrorCode.none}
        assert idle.list_groups() == {"busy": "Stable", "idle": "Empty"}
        assert idle.list_groups("stable") == {"busy": "Stable"}
        busy, unknown = idle.describe("busy", "nobody")
        assert (busy.group_state, busy.protocol_type, busy.protocol_data) == (
            "Stable",
            "consumer",
            "range",
        )
        assignments = {m.member_id: m.member_assignment for m in busy.members}
        assert assignments == {a.member_id: b"a2", b.member_id: b"b2"}
        assert unknown.group_state == "Dead" and unknown.members == ()


def test_offsets_expire_once_a_group_is_empty_past_retention(tmp_path: Path) -> None:
    config = _config(
        tmp_path / "data",
        offsets_retention_minutes=1.5 / 60,
        offsets_retention_check_interval_ms=100,
    )
    with BrokerThread(config) as running:
        with WireClient.connect(running.bootstrap) as client:
            client.ensure_topic("t")
        with (
            GroupClient(running.bootstrap, "gone") as gone,
            GroupClient(running.bootstrap, "live") as live,
        ):
            assert gone.commit({("t", 0): 3}) == {("t", 0): ErrorCode.none}
            live.join(session_ms=30_000)
            live.sync({live.member_id: b""})
            assert live.commit({("t", 0): 4}) == {("t", 0): ErrorCode.none}
            _poll(lambda: gone.committed("t", 0) == -1, 10, "the empty group's offsets to expire")
            assert "gone" not in live.list_groups()
            # The group in use keeps its offsets however old they are...
            assert live.committed("t", 0) == 4
            # ...until it is empty for the retention period.
            assert live.leave() == ErrorCode.none
            left_at = time.monotonic()
            _poll(lambda: live.committed("t", 0) == -1, 10, "the left group's offsets to expire")
            assert time.monotonic() - left_at >= 1.0


def test_offsets_of_deleted_topics_are_dropped(tmp_path: Path) -> None:
    config = _config(tmp_path / "data", offsets_retention_check_interval_ms=100)
    with BrokerThread(config) as running:
        with WireClient.connect(running.bootstrap) as client:
            client.ensure_topic("kept")
            client.ensure_topic("doomed")
        with GroupClient(running.bootstrap, "g") as client:
            assert client.commit({("kept", 0): 1, ("doomed", 0): 2}) == {
                ("kept", 0): ErrorCode.none,
                ("doomed", 0): ErrorCode.none,
            }
    # Delete the topic the way an operator (or a future DeleteTopics) leaves it.
    metadata_file = tmp_path / "data" / "topics.json"
    stored = json.loads(metadata_file.read_text())
    stored["topics"] = [t for t in stored["topics"] if t["name"] != "doomed"]
    metadata_file.write_text(json.dumps(stored))
    with BrokerThread(config) as running, GroupClient(running.bootstrap, "g") as client:
        _poll(
            lambda: set(client.fetch_offsets(None)) == {("kept", 0)},
            10,
            "the deleted topic's offsets to go",
        )
        assert client.committed("kept", 0) == 1


def test_transactional_commit_is_taken_while_the_new_assignment_is_handed_out(
    broker: BrokerThread,
) -> None:
    """As Kafka: a plain commit between JoinGroup and SyncGroup is REBALANCE_IN_PROGRESS,
    a TxnOffsetCommit of the same member and generation is not (else a producer blocked
    in send_offsets_to_transaction retries until it times out)."""
    a = GroupClient(broker.bootstrap, "txn-g")
    with a:
        assert a.join().error_code == ErrorCode.none
        assert a.sync({a.member_id: b""}).error_code == ErrorCode.none
        b = GroupClient(broker.bootstrap, "txn-g")
        with b:
            b.member_id = b.receive_join(b.send_join()).member_id  # MEMBER_ID_REQUIRED
            pending_b = b.send_join()
            pending_a = a.send_join()
            a.generation = a.receive_join(pending_a).generation_id
            b.receive_join(pending_b)
            # Both joined, nobody synced yet: the group is completing its rebalance.
            assert a.commit({("t", 0): 3}) == {("t", 0): ErrorCode.rebalance_in_progress}
            producer = TxnProducer(broker.bootstrap, "txn-g-producer")
            try:
                producer.add_offsets("txn-g")
                response = producer.wire.request(
                    producer.txn_offset_commit_request(
                        "txn-g", {("t", 0): 3}, generation=a.generation, member_id=a.member_id
                    )
                )
            finally:
                producer.close()
            codes = {p.error_code for t in response.topics for p in t.partitions}
            assert codes == {ErrorCode.none}
