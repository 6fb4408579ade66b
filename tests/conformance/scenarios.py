"""The scripted wire scenarios: each sends the same raw requests to whichever broker its
session talks to and records the answers to compare. Names are the test ids."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kio.schema.errors import ErrorCode

from broker.wire import build_batch, values_batch

from .session import Session, retried, txn_batch

Scenario = Callable[[Session], None]
SCENARIOS: dict[str, Scenario] = {}

EARLIEST, LATEST, MAX_TIMESTAMP = -2, -1, -3
SET, DELETE = 0, 1
READ_COMMITTED = 1
TXN_KEY = 1


def scenario(function: Scenario) -> Scenario:
    SCENARIOS[function.__name__.replace("_", "-")] = function
    return function


def _ok(response: Any) -> Any:
    """The response, after checking its error code (every partition's, for Produce)."""
    if hasattr(response, "responses"):
        for topic in response.responses:
            for partition in topic.partition_responses:
                assert partition.error_code == ErrorCode.none, response
    else:
        assert response.error_code == ErrorCode.none, response
    return response


def _retried_while(call: Callable[[], Any], retriable: Callable[[Any], bool]) -> Any:
    """``call()`` again while its answer is ``retriable``, as a client would: bounded by
    a deadline, the pause between tries is the client's backoff, not a wait."""
    deadline = time.monotonic() + 30.0
    while retriable(answer := call()):
        assert time.monotonic() < deadline, answer
        time.sleep(0.05)
    return answer


def retried_unstable(call: Callable[[], Any]) -> Any:
    """OffsetFetch again while its partition answers UNSTABLE_OFFSET_COMMIT (bounded)."""

    def unstable(answer: Any) -> bool:
        (partition,) = answer.topics[0].partitions
        return partition.error_code == ErrorCode.unstable_offset_commit

    return _retried_while(call, unstable)


def retried_concurrent(call: Callable[[], Any]) -> Any:
    """AddPartitionsToTxn again while a partition answers CONCURRENT_TRANSACTIONS, as
    Kafka does until the markers of the transaction before are written (bounded)."""
    return _retried_while(call, lambda a: any(
        p.partition_error_code == ErrorCode.concurrent_transactions
        for t in a.results_by_topic_v3_and_below for p in t.results_by_partition))  # fmt: skip


def _added(response: Any) -> Any:
    """An AddPartitionsToTxn response, after checking every partition was added."""
    for topic in response.results_by_topic_v3_and_below:
        for partition in topic.results_by_partition:
            assert partition.partition_error_code == ErrorCode.none, response
    return response


# -- topics and configs ------------------------------------------------------------------


@scenario
def create_topics_errors(s: Session) -> None:
    s.record("create", s.create_topics([
        (s.name("fine"), 2, -1, {}),
        (s.name("no-partitions"), 0, -1, {}),
        (s.name("too-many-replicas"), 1, 3, {}),
        (s.name("bad name!"), 1, -1, {}),
        (s.name("bad-config"), 1, -1, {"cleanup.policy": "sometimes"}),
        (s.name("unknown-config"), 1, -1, {"no.such.config": "1"}),
    ]))  # fmt: skip


@scenario
def create_existing_topic(s: Session) -> None:
    topic = s.topic("exists")
    s.record("again", s.create_topics([(topic, 1, -1, {})]))


@scenario
def create_topics_validate_only(s: Session) -> None:
    s.record("validate", s.create_topics([(s.name("dry"), 3, -1, {})], validate_only=True))
    s.record("metadata", s.metadata([s.name("dry")]))


@scenario
def delete_topics(s: Session) -> None:
    topic = s.topic("doomed")
    s.record("delete", s.delete_topics([topic, s.name("never-existed")]))


@scenario
def metadata_unknown_topic(s: Session) -> None:
    s.record("metadata", s.metadata([s.name("absent")]))


@scenario
def describe_configs_unknown_topic(s: Session) -> None:
    s.record("describe", s.describe_configs(s.name("absent"), ["retention.ms"]))


@scenario
def describe_configs_override(s: Session) -> None:
    topic = s.topic("override", **{"retention.ms": "3600000"})
    s.record("describe", s.describe_configs(topic, ["retention.ms", "cleanup.policy"]))


@scenario
def alter_configs_set_delete_and_invalid(s: Session) -> None:
    topic = s.topic("altered")
    s.record("set", s.incremental_alter(topic, "retention.ms", SET, "120000"))
    s.record("after-set", s.describe_configs(topic, ["retention.ms"]))
    s.record("delete", s.incremental_alter(topic, "retention.ms", DELETE, None))
    s.record("after-delete", s.describe_configs(topic, ["retention.ms"]))
    s.record("invalid", s.incremental_alter(topic, "retention.ms", SET, "soon"))
    s.record("unknown-topic", s.incremental_alter(s.name("absent"), "retention.ms", SET, "1"))


# -- produce, list offsets, fetch -------------------------------------------------------


@scenario
def produce_unknown_partition(s: Session) -> None:
    topic = s.topic("one-partition")
    s.record("produce", s.produce(topic, 3, values_batch([b"x"])))
    s.record("unknown-topic", s.produce(s.name("absent"), 0, values_batch([b"x"])))


@scenario
def produce_acks_zero_then_list(s: Session) -> None:
    topic = s.topic("plain")
    s.record("produce", s.produce(topic, 0, values_batch([b"a", b"b", b"c"])))
    s.record("earliest", s.list_offsets(topic, [(0, EARLIEST)]))
    s.record("latest", s.list_offsets(topic, [(0, LATEST)]))


@scenario
def list_offsets_by_timestamp(s: Session) -> None:
    topic = s.topic("times")
    for i, ts in enumerate((1_000_000, 2_000_000, 3_000_000)):
        _ok(s.produce(topic, 0, build_batch([(None, b"v%d" % i)], timestamp_ms=ts)))
    for ts in (500_000, 1_500_000, 3_000_000, 9_000_000, EARLIEST, LATEST, MAX_TIMESTAMP):
        s.record(f"lookup {ts}", s.list_offsets(topic, [(0, ts)]))


@scenario
def list_offsets_unknown_partition(s: Session) -> None:
    topic = s.topic("lo-one")
    s.record("unknown-partition", s.list_offsets(topic, [(4, LATEST)]))
    s.record("unknown-topic", s.list_offsets(s.name("absent"), [(0, LATEST)]))


@scenario
def fetch_out_of_range(s: Session) -> None:
    topic = s.topic("short")
    _ok(s.produce(topic, 0, values_batch([b"one", b"two"])))
    s.record("past-end", s.fetch(topic, 0, 5))
    s.record("at-end", s.fetch(topic, 0, 2))
    s.record("from-start", s.fetch(topic, 0, 0))
    s.record("unknown-partition", s.fetch(topic, 7, 0))


# -- idempotent producer ---------------------------------------------------------------


def _producer(s: Session) -> tuple[int, int]:
    answer = _ok(retried(s.init_producer_id))
    return answer.producer_id, answer.producer_epoch  # type: ignore[attr-defined]


@scenario
def idempotent_retry_is_deduplicated(s: Session) -> None:
    topic = s.topic("dedup")
    pid, epoch = _producer(s)
    batch = values_batch([b"a", b"b"], producer_id=pid, producer_epoch=epoch, base_sequence=0)
    s.record("first", s.produce(topic, 0, batch))
    s.record("retry", s.produce(topic, 0, batch))
    s.record("next", s.produce(topic, 0, values_batch(
        [b"c"], producer_id=pid, producer_epoch=epoch, base_sequence=2)))  # fmt: skip
    s.record("end", s.list_offsets(topic, [(0, LATEST)]))


@scenario
def idempotent_sequence_gap(s: Session) -> None:
    topic = s.topic("gap")
    pid, epoch = _producer(s)
    _ok(s.produce(topic, 0, values_batch([b"a"], producer_id=pid, producer_epoch=epoch,
                                         base_sequence=0)))  # fmt: skip
    s.record("gap", s.produce(topic, 0, values_batch(
        [b"c"], producer_id=pid, producer_epoch=epoch, base_sequence=5)))  # fmt: skip
    s.record("end", s.list_offsets(topic, [(0, LATEST)]))


@scenario
def idempotent_first_sequence_not_zero(s: Session) -> None:
    topic = s.topic("late-start")
    pid, epoch = _producer(s)
    s.record("produce", s.produce(topic, 0, values_batch(
        [b"a"], producer_id=pid, producer_epoch=epoch, base_sequence=7)))  # fmt: skip


@scenario
def idempotent_epoch_bump_fences_old_epoch(s: Session) -> None:
    topic = s.topic("bump")
    pid, epoch = _producer(s)
    _ok(s.produce(topic, 0, values_batch([b"a"], producer_id=pid, producer_epoch=epoch,
                                         base_sequence=0)))  # fmt: skip
    bumped = s.record("bump", s.init_producer_id(None, pid, epoch))
    s.record(
        "new-epoch",
        s.produce(
            topic,
            0,
            values_batch(
                [b"b"], producer_id=pid, producer_epoch=bumped.producer_epoch, base_sequence=0
            ),
        ),
    )
    s.record("old-epoch", s.produce(topic, 0, values_batch(
        [b"c"], producer_id=pid, producer_epoch=epoch, base_sequence=1)))  # fmt: skip


# -- transactions -------------------------------------------------------------------


def _txn_producer(s: Session, txn: str) -> tuple[int, int]:
    _ok(retried(lambda: s.find_coordinator(txn, TXN_KEY)))
    answer = _ok(retried(lambda: s.init_producer_id(txn)))
    return answer.producer_id, answer.producer_epoch  # type: ignore[attr-defined]


@scenario
def txn_produce_to_partition_not_added(s: Session) -> None:
    topic = s.topic("not-added")
    txn = s.name("txn")
    pid, epoch = _txn_producer(s, txn)
    s.record("produce", s.produce_retried(topic, 0, txn_batch([b"x"], pid, epoch, 0), txn))


@scenario
def txn_commit_moves_lso(s: Session) -> None:
    topic = s.topic("commit")
    txn = s.name("txn")
    pid, epoch = _txn_producer(s, txn)
    s.record("add", s.add_partitions(txn, pid, epoch, topic, [0]))
    s.record("produce", s.produce_retried(topic, 0, txn_batch([b"a", b"b"], pid, epoch, 0), txn))
    s.record("open-committed", s.list_offsets(topic, [(0, LATEST)], READ_COMMITTED))
    s.record("open-uncommitted", s.list_offsets(topic, [(0, LATEST)]))
    s.record("open-fetch", s.fetch(topic, 0, 0, READ_COMMITTED))
    s.record("commit", s.end_txn(txn, pid, epoch, commit=True))
    s.settle(topic)
    s.record("after-committed", s.list_offsets(topic, [(0, LATEST)], READ_COMMITTED))
    s.record("after-fetch", s.fetch(topic, 0, 0, READ_COMMITTED))


@scenario
def txn_abort_lists_aborted_transaction(s: Session) -> None:
    topic = s.topic("abort")
    txn = s.name("txn")
    pid, epoch = _txn_producer(s, txn)
    _ok(s.produce(topic, 0, values_batch([b"before"])))
    _added(s.add_partitions(txn, pid, epoch, topic, [0]))
    _ok(s.produce_retried(topic, 0, txn_batch([b"x", b"y"], pid, epoch, 0), txn))
    s.record("abort", s.end_txn(txn, pid, epoch, commit=False))
    s.settle(topic)
    s.record("committed-fetch", s.fetch(topic, 0, 0, READ_COMMITTED))
    s.record("uncommitted-fetch", s.fetch(topic, 0, 0))


@scenario
def txn_offset_fetch_require_stable(s: Session) -> None:
    topic = s.topic("stable")
    txn, group = s.name("txn"), s.name("group")
    pid, epoch = _txn_producer(s, txn)
    s.record("add-offsets", s.add_offsets(txn, pid, epoch, group))
    s.record("txn-commit-offsets", s.txn_offset_commit(txn, pid, epoch, group, topic, 5))
    s.record("stable-during", s.offset_fetch(group, topic, require_stable=True))
    s.record("unstable-during", s.offset_fetch(group, topic))
    s.record("commit", s.end_txn(txn, pid, epoch, commit=True))
    # Kafka completes the offsets after answering EndTxn: wait as a client retries.
    s.record("stable-after", retried_unstable(lambda: s.offset_fetch(group, topic, True)))


@scenario
def txn_init_again_fences_old_epoch(s: Session) -> None:
    topic = s.topic("fence")
    txn = s.name("txn")
    pid, epoch = _txn_producer(s, txn)
    _added(s.add_partitions(txn, pid, epoch, topic, [0]))
    _ok(s.produce_retried(topic, 0, txn_batch([b"zombie"], pid, epoch, 0), txn))
    # Kafka answers CONCURRENT_TRANSACTIONS until its abort completes; clients retry.
    s.record("init-again", retried(lambda: s.init_producer_id(txn)))
    s.settle(topic)
    s.record("old-add", s.add_partitions(txn, pid, epoch, topic, [0]))
    s.record("old-end", s.end_txn(txn, pid, epoch, commit=True))
    s.record("zombie-gone", s.fetch(topic, 0, 0, READ_COMMITTED))


@scenario
def txn_end_without_transaction(s: Session) -> None:
    txn = s.name("txn")
    pid, epoch = _txn_producer(s, txn)
    s.record("commit-nothing", s.end_txn(txn, pid, epoch, commit=True))
    s.record("unknown-id", s.end_txn(s.name("never-initialised"), pid, epoch, commit=True))


# -- groups -----------------------------------------------------------------------------


@scenario
def group_join_sync_heartbeat_leave(s: Session) -> None:
    group = s.name("group")
    first = s.record("join-no-id", s.join_group(group))
    member = first.member_id
    joined = s.record("join", s.join_group(group, member))
    generation = joined.generation_id
    s.record("sync", s.sync_group(group, generation, member, b"plan"))
    s.record("heartbeat", s.heartbeat(group, generation, member))
    s.record("heartbeat-old-generation", s.heartbeat(group, generation + 5, member))
    s.record("heartbeat-unknown-member", s.heartbeat(group, generation, "stranger"))
    s.record("sync-old-generation", s.sync_group(group, generation - 1, member))
    s.record("leave-unknown", s.leave_group(group, "stranger"))
    s.record("leave", s.leave_group(group, member))
    s.record("heartbeat-after-leave", s.heartbeat(group, generation, member))


@scenario
def group_join_bad_session_timeout(s: Session) -> None:
    s.record("too-short", s.join_group(s.name("group"), session_ms=1))
    s.record("too-long", s.join_group(s.name("group"), session_ms=3_600_000))


@scenario
def group_offsets_commit_and_fetch(s: Session) -> None:
    topic = s.topic("offsets")
    group = s.name("group")
    s.record("fetch-none", s.offset_fetch(group, topic))
    s.record("commit-simple", s.offset_commit(group, topic, 3))
    s.record("fetch", s.offset_fetch(group, topic))
    s.record("commit-stranger", s.offset_commit(group, topic, 4, 1, "stranger"))
    s.record("unknown-group-fetch", s.offset_fetch(s.name("no-group"), topic))


# -- more topics, records and versions ---------------------------------------------------


@scenario
def api_versions_unsupported_version(s: Session) -> None:
    answer = s.api_versions_unsupported(127)
    # The api key list is each broker's own; the error and its v0 form are the contract.
    s.record("error", {"error_code": answer.error_code.name, "has_api_keys": bool(answer.api_keys)})


@scenario
def metadata_auto_creates_topic(s: Session) -> None:
    answer = s.metadata([s.name("auto")], auto_create=True)
    (topic,) = answer.topics
    s.record("created", {"error_code": topic.error_code.name})
    deadline = time.monotonic() + 30.0
    while True:
        (topic,) = s.metadata([s.name("auto")]).topics
        if topic.error_code == ErrorCode.none and topic.partitions:
            break
        assert time.monotonic() < deadline, topic
        time.sleep(0.05)
    s.record("metadata", {"partitions": len(topic.partitions), "internal": topic.is_internal})


@scenario
def create_partitions_grow_and_shrink(s: Session) -> None:
    topic = s.topic("grow")
    s.record("grow", s.create_partitions(topic, 3))
    s.record("shrink", s.create_partitions(topic, 2))
    s.record("same", s.create_partitions(topic, 3))
    s.record("unknown", s.create_partitions(s.name("absent"), 2))


@scenario
def delete_records_moves_log_start(s: Session) -> None:
    topic = s.topic("trim")
    _ok(s.produce(topic, 0, values_batch([b"a", b"b", b"c", b"d"])))
    s.record("delete", s.delete_records(topic, 0, 2))
    s.record("earliest", s.list_offsets(topic, [(0, EARLIEST)]))
    s.record("fetch-deleted", s.fetch(topic, 0, 0))
    s.record("beyond-end", s.delete_records(topic, 0, 10))
    s.record("to-end", s.delete_records(topic, 0, -1))
    s.record("unknown-partition", s.delete_records(topic, 3, 0))


@scenario
def produce_invalid_acks(s: Session) -> None:
    topic = s.topic("acks")
    s.record("acks-2", s.produce(topic, 0, values_batch([b"x"]), acks=2))


@scenario
def produce_corrupt_crc(s: Session) -> None:
    topic = s.topic("crc")
    batch = bytearray(values_batch([b"intact"]))
    batch[-1] ^= 0xFF
    s.record("corrupt", s.produce(topic, 0, bytes(batch)))
    s.record("end", s.list_offsets(topic, [(0, LATEST)]))


@scenario
def produce_keyless_to_compacted_topic(s: Session) -> None:
    topic = s.topic("compacted", **{"cleanup.policy": "compact"})
    s.record("keyless", s.produce(topic, 0, values_batch([b"no key"])))
    s.record("keyed", s.produce(topic, 0, build_batch([(b"k", b"v")])))


@scenario
def idempotent_older_batch_retry(s: Session) -> None:
    topic = s.topic("older-retry")
    pid, epoch = _producer(s)
    batches = [
        values_batch([b"v%d" % i], producer_id=pid, producer_epoch=epoch, base_sequence=i)
        for i in range(4)
    ]
    for batch in batches:
        _ok(s.produce(topic, 0, batch))
    s.record("retry-second", s.produce(topic, 0, batches[1]))
    s.record("end", s.list_offsets(topic, [(0, LATEST)]))


@scenario
def describe_producers_of_partition(s: Session) -> None:
    topic = s.topic("producers")
    pid, epoch = _producer(s)
    _ok(s.produce(topic, 0, values_batch([b"a", b"b"], producer_id=pid, producer_epoch=epoch,
                                         base_sequence=0)))  # fmt: skip
    answer = s.describe_producers(topic, [0, 9])
    # Last timestamps are each broker's clock.
    (topic_answer,) = answer.topics
    s.record("partitions", [
        {"partition": p.partition_index, "error": p.error_code.name,
         "producers": [(st.producer_epoch, st.last_sequence, st.coordinator_epoch,
                        st.current_txn_start_offset) for st in p.active_producers]}
        for p in topic_answer.partitions
    ])  # fmt: skip


# -- more transactions -------------------------------------------------------------------


@scenario
def txn_add_partitions_wrong_producer(s: Session) -> None:
    topic = s.topic("wrong-pid")
    txn = s.name("txn")
    pid, epoch = _txn_producer(s, txn)
    s.record("wrong-id", s.add_partitions(txn, pid + 1000, epoch, topic, [0]))
    s.record("unknown-txn", s.add_partitions(s.name("never"), pid, epoch, topic, [0]))
    s.record("old-epoch", s.add_partitions(txn, pid, epoch - 1 if epoch else 5, topic, [0]))


@scenario
def txn_commit_twice(s: Session) -> None:
    topic = s.topic("twice")
    txn = s.name("txn")
    pid, epoch = _txn_producer(s, txn)
    _added(s.add_partitions(txn, pid, epoch, topic, [0]))
    _ok(s.produce_retried(topic, 0, txn_batch([b"once"], pid, epoch, 0), txn))
    s.record("commit", s.end_txn(txn, pid, epoch, commit=True))
    s.record("abort-after-commit", retried(lambda: s.end_txn(txn, pid, epoch, commit=False)))


@scenario
def txn_offset_commit_without_add_offsets(s: Session) -> None:
    topic = s.topic("no-add-offsets")
    txn, group = s.name("txn"), s.name("group")
    pid, epoch = _txn_producer(s, txn)
    s.record("txn-commit", s.txn_offset_commit(txn, pid, epoch, group, topic, 1))


@scenario
def describe_transactions_states(s: Session) -> None:
    topic = s.topic("described")
    txn = s.name("txn")
    pid, epoch = _txn_producer(s, txn)
    _added(s.add_partitions(txn, pid, epoch, topic, [0]))
    answer = s.describe_transactions([txn, s.name("unknown")])
    s.record("open", [
        {"id": t.transactional_id, "error": t.error_code.name, "state": t.transaction_state,
         "timeout": int(t.transaction_timeout.total_seconds() * 1000),
         "topics": [(x.topic, list(x.partitions)) for x in t.topics]}
        for t in answer.transaction_states
    ])  # fmt: skip


# -- more groups ---------------------------------------------------------------------------


@scenario
def group_join_unknown_member_id(s: Session) -> None:
    s.record("join", s.join_group(s.name("group"), "not-a-member"))


@scenario
def group_heartbeat_and_sync_unknown_group(s: Session) -> None:
    group = s.name("nobody")
    s.record("heartbeat", s.heartbeat(group, 1, "someone"))
    s.record("sync", s.sync_group(group, 1, "someone"))
    s.record("leave", s.leave_group(group, "someone"))


@scenario
def group_describe_after_join(s: Session) -> None:
    group = s.name("group")
    member = s.join_group(group).member_id
    joined = s.join_group(group, member)
    _ok(s.sync_group(group, joined.generation_id, member, b"plan"))
    answer = s.describe_groups([group, s.name("empty")])
    groups = sorted(answer.groups, key=lambda g: g.group_id)
    s.record("describe", [
        {"group": g.group_id, "error": g.error_code.name, "state": g.group_state,
         "protocol_type": g.protocol_type, "protocol": g.protocol_data,
         "members": [(m.client_id, m.member_assignment) for m in g.members]}
        for g in groups
    ])  # fmt: skip


@scenario
def group_offset_commit_unknown_topic(s: Session) -> None:
    group = s.name("group")
    s.record("commit", s.offset_commit(group, s.name("absent"), 1))


@scenario
def find_coordinator_kinds(s: Session) -> None:
    s.record("group", retried(lambda: s.find_coordinator(s.name("group"), 0)))
    s.record("transaction", retried(lambda: s.find_coordinator(s.name("txn"), 1)))
    s.record("bad-type", s.find_coordinator(s.name("x"), 7))


# -- further produce and topic edges -----------------------------------------------------


@scenario
def produce_two_batches_in_one_partition(s: Session) -> None:
    topic = s.topic("two-batches")
    s.record("produce", s.produce(topic, 0, values_batch([b"a"]) + values_batch([b"b"])))


@scenario
def produce_batch_above_max_message_bytes(s: Session) -> None:
    topic = s.topic("small", **{"max.message.bytes": "200"})
    s.record("large", s.produce(topic, 0, values_batch([b"x" * 500])))
    s.record("small", s.produce(topic, 0, values_batch([b"x"])))


@scenario
def produce_many_partitions_one_request_unknown_mixed(s: Session) -> None:
    topic = s.topic("mixed", partitions=2)
    s.record("p0", s.produce(topic, 0, values_batch([b"a"]), acks=1))
    s.record("p1", s.produce(topic, 1, values_batch([b"b", b"c"]), acks=1))
    s.record("p2", s.produce(topic, 2, values_batch([b"d"]), acks=1))


@scenario
def create_topics_duplicate_name_in_request(s: Session) -> None:
    name = s.name("twice")
    s.record("create", s.create_topics([(name, 1, -1, {}), (name, 1, -1, {})]))


@scenario
def create_topics_invalid_config_value(s: Session) -> None:
    s.record("create", s.create_topics([(s.name("bad-retention"), 1, -1,
                                         {"retention.ms": "forever"})]))  # fmt: skip


@scenario
def describe_configs_unknown_key(s: Session) -> None:
    topic = s.topic("keys")
    s.record("describe", s.describe_configs(topic, ["no.such.key"]))


@scenario
def alter_configs_unknown_key(s: Session) -> None:
    topic = s.topic("alter-unknown")
    s.record("alter", s.incremental_alter(topic, "no.such.key", SET, "1"))


@scenario
def delete_topic_then_metadata(s: Session) -> None:
    topic = s.topic("gone")
    assert s.delete_topics([topic]).responses[0].error_code == ErrorCode.none
    deadline = time.monotonic() + 30.0
    while s.metadata([topic]).topics[0].error_code == ErrorCode.none:
        assert time.monotonic() < deadline, "deleted topic still listed"
        time.sleep(0.05)
    s.record("metadata", s.metadata([topic]))
    s.record("produce", s.produce(topic, 0, values_batch([b"late"])))


@scenario
def list_offsets_empty_topic(s: Session) -> None:
    topic = s.topic("empty")
    for ts in (EARLIEST, LATEST, MAX_TIMESTAMP, 1_000):
        s.record(f"lookup {ts}", s.list_offsets(topic, [(0, ts)]))


# -- further transactions --------------------------------------------------------------


@scenario
def txn_read_committed_stops_at_lso(s: Session) -> None:
    topic = s.topic("lso", partitions=2)
    txn = s.name("txn")
    pid, epoch = _txn_producer(s, txn)
    _ok(s.produce(topic, 0, values_batch([b"plain-1", b"plain-2"])))
    _added(s.add_partitions(txn, pid, epoch, topic, [0]))
    s.record("txn", s.produce_retried(topic, 0, txn_batch([b"open"], pid, epoch, 0), txn))
    _ok(s.produce(topic, 0, values_batch([b"after"])))
    _ok(s.produce(topic, 1, values_batch([b"other"])))
    s.record("p0-committed", s.list_offsets(topic, [(0, LATEST)], READ_COMMITTED))
    s.record("p1-committed", s.list_offsets(topic, [(1, LATEST)], READ_COMMITTED))
    s.record("p0-fetch", s.fetch(topic, 0, 0, READ_COMMITTED))
    s.record("abort", s.end_txn(txn, pid, epoch, commit=False))
    s.settle(topic)
    s.record("p0-after", s.fetch(topic, 0, 0, READ_COMMITTED))


@scenario
def txn_abort_then_commit(s: Session) -> None:
    topic = s.topic("abort-commit")
    txn = s.name("txn")
    pid, epoch = _txn_producer(s, txn)
    _added(s.add_partitions(txn, pid, epoch, topic, [0]))
    _ok(s.produce_retried(topic, 0, txn_batch([b"dropped"], pid, epoch, 0), txn))
    s.record("abort", s.end_txn(txn, pid, epoch, commit=False))
    s.settle(topic)
    s.record("add-again", retried_concurrent(lambda: s.add_partitions(txn, pid, epoch, topic, [0])))
    s.record("produce", s.produce_retried(topic, 0, txn_batch([b"kept"], pid, epoch, 1), txn))
    s.record("commit", s.end_txn(txn, pid, epoch, commit=True))
    s.settle(topic)
    s.record("fetch", s.fetch(topic, 0, 0, READ_COMMITTED))


@scenario
def txn_two_partitions_commit(s: Session) -> None:
    topic = s.topic("two", partitions=2)
    txn = s.name("txn")
    pid, epoch = _txn_producer(s, txn)
    s.record("add", s.add_partitions(txn, pid, epoch, topic, [0, 1]))
    for partition in (0, 1):
        s.record(f"produce {partition}", s.produce_retried(
            topic, partition, txn_batch([b"p%d" % partition], pid, epoch, 0), txn))  # fmt: skip
    s.record("commit", s.end_txn(txn, pid, epoch, commit=True))
    for partition in (0, 1):
        s.settle(topic, partition)
        s.record(f"fetch {partition}", s.fetch(topic, partition, 0, READ_COMMITTED))


@scenario
def txn_add_partitions_unknown_topic(s: Session) -> None:
    txn = s.name("txn")
    pid, epoch = _txn_producer(s, txn)
    s.record("add", s.add_partitions(txn, pid, epoch, s.name("absent"), [0]))


@scenario
def txn_end_with_future_epoch(s: Session) -> None:
    txn = s.name("txn")
    topic = s.topic("future")
    pid, epoch = _txn_producer(s, txn)
    _added(s.add_partitions(txn, pid, epoch, topic, [0]))
    s.record("end", s.end_txn(txn, pid, epoch + 1, commit=True))
    s.record("abort", s.end_txn(txn, pid, epoch, commit=False))


@scenario
def txn_offsets_aborted_are_not_committed(s: Session) -> None:
    topic = s.topic("offsets-abort")
    txn, group = s.name("txn"), s.name("group")
    pid, epoch = _txn_producer(s, txn)
    _ok(s.add_offsets(txn, pid, epoch, group))
    s.record("stage", s.txn_offset_commit(txn, pid, epoch, group, topic, 9))
    s.record("abort", s.end_txn(txn, pid, epoch, commit=False))
    s.record("fetch", retried_unstable(lambda: s.offset_fetch(group, topic, True)))


@scenario
def describe_producers_open_transaction(s: Session) -> None:
    topic = s.topic("txn-producers")
    txn = s.name("txn")
    pid, epoch = _txn_producer(s, txn)
    _ok(s.produce(topic, 0, values_batch([b"before"])))
    _added(s.add_partitions(txn, pid, epoch, topic, [0]))
    _ok(s.produce_retried(topic, 0, txn_batch([b"a", b"b"], pid, epoch, 0), txn))
    (partition,) = s.describe_producers(topic, [0]).topics[0].partitions
    s.record("producers", [(st.producer_epoch, st.last_sequence, st.current_txn_start_offset)
                           for st in partition.active_producers])  # fmt: skip
    _ok(s.end_txn(txn, pid, epoch, commit=False))


# -- further groups -----------------------------------------------------------------------


@scenario
def group_rejoin_after_leave_bumps_generation(s: Session) -> None:
    group = s.name("group")
    member = s.join_group(group).member_id
    first = s.record("join", s.join_group(group, member))
    _ok(s.sync_group(group, first.generation_id, member, b"a"))
    _ok(s.leave_group(group, member))
    second_id = s.join_group(group).member_id
    s.record("rejoin", s.join_group(group, second_id))


@scenario
def group_offset_fetch_all_topics(s: Session) -> None:
    first, second = s.topic("all-1"), s.topic("all-2")
    group = s.name("group")
    for name, offset in ((first, 4), (second, 7)):
        (committed,) = s.offset_commit(group, name, offset).topics[0].partitions
        assert committed.error_code == ErrorCode.none
    s.record("all", s.offset_fetch(group, None))
