"""Commit policies: the one thing the three guarantees do differently.

The runner's loop calls ``on_batch`` with polled records, ``maybe_commit`` after
each poll, ``on_assign``/``on_revoke``/``on_lost`` from the rebalance callbacks and
``abandon`` when the loop dies with an error. A policy sees the runner only through
``Loop``, the few things it needs; it never imports the runner.
"""

from __future__ import annotations

import enum
import logging
import time
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from onceflow.guarantees import Guarantee
from onceflow.processing.crashpoints import (
    AFTER_COMMIT,
    BEFORE_COMMIT,
    BEFORE_OFFSETS,
    RECORD_PROCESSED,
)
from onceflow.processing.errors import (
    InstanceFencedError,
    PartitionsFencedError,
    ProducerFencedError,
)
from onceflow.processing.records import Record
from onceflow.processing.sinks.sink import DatabaseSink, TopicPartitionKey
from onceflow.processing.stats import RunStats

log = logging.getLogger(__name__)

# Rebuilding a fenced producer this many times in a row without a successful commit
# means something else keeps fencing us: stop instead of spinning.
MAX_REBUILDS = 3
MAX_COMMIT_ATTEMPTS = 5

# Group errors that mean "this member's assignment is stale": the group moved on (a
# rebalance, another owner, or a broker restart that forgot the in-memory group). The
# consumer rejoins by itself through poll(); the application must not crash, and must
# not retry the stale commit later (it could move a new owner's position backwards).
# librdkafka reports a lost assignment as _ASSIGNMENT_LOST once it knows.
STALE_ASSIGNMENT = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError._ASSIGNMENT_LOST,
    }
)


class Loop(Protocol):
    """What a commit policy needs from the runner: its settings, clients and sink, and
    the steps it may take (process a record, rewind, rebuild the producer, rejoin)."""

    guarantee: Guarantee
    group: str
    commit_every: int
    commit_interval: float
    timeout: float
    transactional_id: str | None
    #: The group uses cooperative rebalancing: callbacks add and remove partitions
    #: incrementally instead of replacing the whole assignment.
    cooperative: bool
    stats: RunStats
    sink: DatabaseSink | None
    consumer: Consumer | None
    producer: Producer | None

    @property
    def db_is_commit_point(self) -> bool: ...

    def handle(self, record: Record) -> None:
        """Process one record and hand its outputs to Kafka or the sink."""
        ...

    def fault(self, point: str) -> None:
        """Let the fault hook act at a crash point."""
        ...

    def rewind(self, positions: dict[TopicPartitionKey, int] | None = None) -> None:
        """Seek the assigned partitions back to ``positions`` or the committed offsets."""
        ...

    def rebuild_producer(self) -> None:
        """Close the producer and build a new one."""
        ...

    def request_rejoin(self) -> None:
        """Leave the group and join again once the current call returns."""
        ...

    def identity_taken(self) -> InstanceFencedError:
        """The error to stop with when a newer runner holds this one's identity."""
        ...

    def take_delivery_failures(self) -> list[KafkaError]:
        """Delivery errors reported since the last call."""
        ...


class CommitAction(enum.Enum):
    """What to do after ``commit_transaction`` raised."""

    RETRY = "retry the commit"
    ABORT = "abort the transaction and redo its records"
    REBUILD = "rebuild the producer: the commit's outcome is unknown"


def after_failed_commit(error: KafkaError, *, ambiguous: bool, last_attempt: bool) -> CommitAction:
    """Decide what follows a failed ``commit_transaction``.

    ``ambiguous``: an earlier attempt of this commit failed in a way that leaves its
    outcome unknown (it timed out or lost its coordinator: the EndTxn request may still
    land). From then on the
    transaction is never aborted: a delayed commit could otherwise apply to a later
    transaction (KAFKA-17754, found by Jepsen's Bufstream analysis). Retrying is safe;
    rebuilding the producer makes the coordinator finish the transaction either way, and
    the runner then resumes from the committed positions.
    """
    if error.fatal():
        return CommitAction.REBUILD
    if error.retriable() and not last_attempt:
        return CommitAction.RETRY
    if error.txn_requires_abort() and not ambiguous:
        return CommitAction.ABORT
    return CommitAction.REBUILD


def _offsets(positions: dict[TopicPartitionKey, int]) -> list[TopicPartition]:
    return [TopicPartition(t, p, o) for (t, p), o in positions.items()]


class CommitPolicy:
    """Tracks processed positions and commits them; subclasses pick when and how."""

    def __init__(self, runner: Loop) -> None:
        self.runner = runner
        self.pending: dict[TopicPartitionKey, int] = {}
        self.pending_since: float | None = None
        self.pending_count = 0

    def _process(self, records: list[Record]) -> None:
        for record in records:
            self.runner.handle(record)
            self.pending[(record.topic, record.partition)] = record.offset + 1
            self.pending_count += 1
            if self.pending_since is None:
                self.pending_since = time.monotonic()
            self.runner.fault(RECORD_PROCESSED)

    def _due(self, force: bool) -> bool:
        if not self.pending:
            return False
        if force or self.pending_count >= self.runner.commit_every:
            return True
        assert self.pending_since is not None
        return time.monotonic() - self.pending_since >= self.runner.commit_interval

    def _clear(self) -> None:
        self.pending.clear()
        self.pending_since = None
        self.pending_count = 0

    def _flush_producer(self) -> None:
        producer = self.runner.producer
        if producer is None:
            return
        remaining = producer.flush(self.runner.timeout)
        failures = self.runner.take_delivery_failures()
        if remaining or failures:
            raise KafkaException(failures[0] if failures else KafkaError(KafkaError._MSG_TIMED_OUT))

    def on_batch(self, records: list[Record]) -> None:
        raise NotImplementedError

    def maybe_commit(self, force: bool) -> None:
        """Commit processed work if enough is pending (or ``force``)."""

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions arrived; the default starts at the group's committed offsets."""

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions are leaving: commit what was processed."""
        self.maybe_commit(force=True)

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions were lost (session expired): another member may own them already,
        so uncommitted work is dropped, never committed; their new owner redoes it."""
        self.abandon()

    def abandon(self) -> None:
        """The loop failed: drop uncommitted work so nothing commits it later."""
        if self.runner.sink is not None:
            self.runner.sink.rollback()
        self._clear()

    def _commit_offsets(self, positions: dict[TopicPartitionKey, int]) -> bool:
        """Commit ``positions`` synchronously; False (logged, counted, positions
        forgotten, consumer rewound to the committed offsets) when the group says this
        member's assignment is stale. Any other error is raised."""
        consumer = self.runner.consumer
        assert consumer is not None
        try:
            consumer.commit(offsets=_offsets(positions), asynchronous=False)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError.FENCED_INSTANCE_ID:
                # A restart of this instance took the membership: stop, never rejoin.
                raise self.runner.identity_taken() from exc
            if error.code() not in STALE_ASSIGNMENT:
                raise
            log.warning("offset commit refused, the assignment is stale: %s", error)
            self.runner.stats.errors.append(error.name())
            self._clear()
            # If the partitions stay ours, redo from what the group has; if they move,
            # the rebalance resets the positions anyway. A failed lookup is left to it.
            try:
                self.runner.rewind()
            except KafkaException as rewind_exc:
                log.info("rewind after a stale commit failed: %s", rewind_exc)
            return False
        self.runner.stats.commits += 1
        return True


class AtMostOnce(CommitPolicy):
    """Commit the batch's positions synchronously, then process it."""

    def on_batch(self, records: list[Record]) -> None:
        assert self.runner.consumer is not None
        positions: dict[TopicPartitionKey, int] = {}
        for record in records:
            positions[(record.topic, record.partition)] = record.offset + 1
        if not self._commit_offsets(positions):
            # Not committed, so not ours to process: another member (or this one after
            # rejoining) starts at the committed offsets; processing now could duplicate.
            return
        self.runner.fault(AFTER_COMMIT)
        self._process(records)
        if self.runner.sink is not None:
            self.runner.sink.commit(self.runner.group, self.pending)
        self._clear()


class AtLeastOnce(CommitPolicy):
    """Process, make the outputs durable, then commit the positions synchronously."""

    def maybe_commit(self, force: bool) -> None:
        if not self._due(force):
            return
        consumer = self.runner.consumer
        assert consumer is not None
        if self.runner.sink is not None:
            self.runner.sink.commit(self.runner.group, self.pending)
        self._flush_producer()
        self.runner.fault(BEFORE_COMMIT)
        # Refused as stale: the outputs are durable but the positions are not, so the
        # records are delivered again (to whichever member owns them): at least once.
        if not self._commit_offsets(self.pending):
            return
        self._clear()
        self.runner.fault(AFTER_COMMIT)

    def on_batch(self, records: list[Record]) -> None:
        self._process(records)


class KafkaTransactions(CommitPolicy):
    """Outputs and positions in one Kafka transaction (KIP-447 group metadata).

    An idempotent database sink commits just before the Kafka transaction: if the
    transaction then aborts, the redone records find their rows already written.
    """

    def __init__(self, runner: Loop) -> None:
        super().__init__(runner)
        self.in_txn = False
        self.rebuilds_in_a_row = 0

    def on_batch(self, records: list[Record]) -> None:
        producer = self.runner.producer
        assert producer is not None
        try:
            if not self.in_txn:
                producer.begin_transaction()
                self.in_txn = True
            self._process(records)
        except KafkaException as exc:
            self._recover(exc)

    def maybe_commit(self, force: bool) -> None:
        if not self.in_txn:
            return
        if not self.pending:
            # Only possible after a recovery emptied the batch: nothing to keep.
            if force:
                self._abort()
            return
        if not self._due(force):
            return
        try:
            self._commit()
        except KafkaException as exc:
            self._recover(exc)

    def _commit(self) -> None:
        runner = self.runner
        producer, consumer = runner.producer, runner.consumer
        assert producer is not None and consumer is not None
        if runner.sink is not None:
            runner.sink.commit(runner.group, self.pending)
        runner.fault(BEFORE_OFFSETS)
        # The broker checks the group metadata's generation (KIP-447): a member whose
        # partitions moved on gets an error here instead of committing stale results. A
        # consumer that already knows it was dropped from the group would send no member
        # id and generation -1, which brokers accept unchecked: abort instead.
        if not consumer.memberid():
            raise KafkaException(
                KafkaError(
                    KafkaError.UNKNOWN_MEMBER_ID,
                    "the consumer left the group; its positions cannot be committed",
                    txn_requires_abort=True,
                )
            )
        producer.send_offsets_to_transaction(
            _offsets(self.pending), consumer.consumer_group_metadata(), runner.timeout
        )
        runner.fault(BEFORE_COMMIT)
        if not self._finish_commit(producer):
            return
        self.in_txn = False
        self.rebuilds_in_a_row = 0
        runner.stats.commits += 1
        self._clear()
        runner.fault(AFTER_COMMIT)

    def _finish_commit(self, producer: Producer) -> bool:
        """``commit_transaction``, retried while that is safe; False when the producer
        had to be rebuilt because the commit's outcome is unknown. An error that calls
        for an abort (and may, see ``after_failed_commit``) is raised."""
        ambiguous = False
        for attempt in range(1, MAX_COMMIT_ATTEMPTS + 1):
            try:
                producer.commit_transaction(self.runner.timeout)
                return True
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                action = after_failed_commit(
                    error, ambiguous=ambiguous, last_attempt=attempt == MAX_COMMIT_ATTEMPTS
                )
                log.warning("commit_transaction failed (%s): %s", error, action.value)
                if action is CommitAction.ABORT:
                    raise
                self.runner.stats.errors.append(error.name())
                if action is CommitAction.REBUILD:
                    self._rebuild(error, exc)
                    return False
                # The failed attempt's EndTxn may still land (a timeout, a lost
                # coordinator): from now on the outcome is unknown.
                ambiguous = True
        raise AssertionError("unreachable: the last attempt never retries")

    def _abort(self) -> None:
        producer = self.runner.producer
        assert producer is not None
        if self.in_txn:
            producer.abort_transaction(self.runner.timeout)
            self.in_txn = False
            self.runner.stats.aborts += 1
        if self.runner.sink is not None:
            self.runner.sink.rollback()
        self._clear()

    def _root_cause(self, error: KafkaError) -> KafkaError:
        """produce() can report a dead producer only as _FATAL; the transactional API
        answers with the error that killed it (e.g. _FENCED), which is what to report."""
        producer = self.runner.producer
        if error.code() != KafkaError._FATAL or producer is None:
            return error
        try:
            producer.abort_transaction(1)
        except KafkaException as exc:
            return exc.args[0]
        return error

    def _recover(self, exc: KafkaException) -> None:
        error: KafkaError = self._root_cause(exc.args[0])
        self.runner.stats.errors.append(error.name())
        if error.code() == KafkaError.FENCED_INSTANCE_ID:
            raise self.runner.identity_taken() from exc
        if error.txn_requires_abort():
            log.warning("aborting transaction after abortable error: %s", error)
            try:
                self._abort()
                self.runner.rewind()
                return
            except KafkaException as abort_exc:
                # The abort itself can find the producer fenced: rebuild below.
                exc, error = abort_exc, abort_exc.args[0]
        self._rebuild(error, exc)

    def _rebuild(self, error: KafkaError, exc: KafkaException) -> None:
        """Fenced, fatal or of unknown outcome: this producer is done. Build a new one
        (its init_transactions makes the coordinator finish the old transaction), join
        the group again as a new member and start over from the committed positions;
        repeated failures are surfaced, never swallowed. If the group says a newer
        runner holds this one's identity (it fenced this producer), the runner stops
        with ``InstanceFencedError`` instead: a new producer would fence it back."""
        log.error("transactional producer failed (%s); rebuilding it unless replaced", error)
        self.rebuilds_in_a_row += 1
        if self.rebuilds_in_a_row > MAX_REBUILDS:
            raise ProducerFencedError(
                f"producer {self.runner.transactional_id} failed {MAX_REBUILDS} times "
                f"in a row: {error}"
            ) from exc
        if self.runner.sink is not None:
            self.runner.sink.rollback()
        self.in_txn = False
        self._clear()
        self.runner.rebuild_producer()
        self.runner.request_rejoin()

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The transaction holds offsets of partitions that are leaving: finish it now,
        # while this member still owns them.
        self.maybe_commit(force=True)

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Committing now would fail the generation check anyway; aborting makes the
        # outputs invisible at once instead of when the transaction times out.
        try:
            self._abort()
        except KafkaException as exc:
            self._recover(exc)

    def abandon(self) -> None:
        try:
            if self.in_txn and self.runner.producer is not None:
                self._abort()
        except KafkaException as exc:
            log.error("abort during shutdown failed: %s", exc)
        super().abandon()
        self.in_txn = False


class DatabaseTransactions(CommitPolicy):
    """Rows and positions in one database transaction; the database owns the positions.

    The sink claims each assigned partition (bumping its owner generation) and refuses a
    commit for a partition claimed since by another runner: this runner then drops its
    work and joins the group again, and the owner's stored offsets never move back.
    """

    def on_batch(self, records: list[Record]) -> None:
        self._process(records)

    def maybe_commit(self, force: bool) -> None:
        if not self._due(force):
            return
        runner = self.runner
        assert runner.sink is not None and runner.consumer is not None
        runner.fault(BEFORE_OFFSETS)  # rows staged, nothing in the database yet
        try:
            runner.sink.commit(runner.group, self.pending)
        except PartitionsFencedError as exc:
            log.warning("zombie fenced by the database: %s", exc)
            runner.stats.fenced += 1
            runner.stats.errors.append("FENCED_IN_DATABASE")
            self._clear()
            runner.request_rejoin()
            return
        except Exception:
            stored = runner.sink.stored_offsets(runner.group, self.pending)
            self._clear()
            runner.rewind(stored)
            raise
        runner.fault(BEFORE_COMMIT)  # the database has it; Kafka does not yet
        runner.stats.commits += 1
        try:
            # Informational only (lag monitoring); the database is the truth.
            runner.consumer.commit(offsets=_offsets(self.pending), asynchronous=True)
        except KafkaException as exc:
            log.info("informational group commit failed: %s", exc)
        self._clear()
        runner.fault(AFTER_COMMIT)

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        sink = self.runner.sink
        assert sink is not None
        stored = sink.claim(self.runner.group, [(p.topic, p.partition) for p in partitions])
        for p in partitions:
            offset = stored.get((p.topic, p.partition))
            if offset is not None:
                p.offset = offset
        # Under cooperative rebalancing these partitions join the ones kept; eagerly,
        # they are the whole new assignment.
        if self.runner.cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        super().on_revoke(consumer, partitions)
        self._release(partitions)

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        super().on_lost(consumer, partitions)
        self._release(partitions)

    def _release(self, partitions: list[TopicPartition]) -> None:
        assert self.runner.sink is not None
        self.runner.sink.release((p.topic, p.partition) for p in partitions)


def policy_for(runner: Loop) -> CommitPolicy:
    """The commit policy that implements the runner's guarantee."""
    if runner.guarantee is Guarantee.AT_MOST_ONCE:
        return AtMostOnce(runner)
    if runner.guarantee is Guarantee.AT_LEAST_ONCE:
        return AtLeastOnce(runner)
    if runner.db_is_commit_point:
        return DatabaseTransactions(runner)
    return KafkaTransactions(runner)
