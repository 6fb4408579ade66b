"""The runner: one consume-process-produce loop; the guarantee picks its commit policy."""

from __future__ import annotations

import hashlib
import logging
import re
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from types import FrameType
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from onceflow.client_logging import client_config
from onceflow.guarantees import Guarantee, consumer_config, producer_config
from onceflow.processing.errors import InstanceFencedError, ProcessingError, RunnerConfigError
from onceflow.processing.membership import Membership, membership
from onceflow.processing.policies import policy_for
from onceflow.processing.records import Message, Output, Record, Row
from onceflow.processing.sinks.sink import DatabaseSink, TopicPartitionKey
from onceflow.processing.stats import RunStats

log = logging.getLogger(__name__)

ProcessFn = Callable[[Record], Iterable[Output]]
FaultHook = Callable[[str], None]

_NOT_IN_IDS = re.compile(r"[^A-Za-z0-9._-]")
# Kafka refuses a group.instance.id of 249 characters or more.
_MAX_IDENTITY = 248
#: init_transactions is called for at most this long at a time, so that a stop (SIGTERM)
#: is seen while a coordinator is still loading; librdkafka resumes the call.
INIT_SLICE_SECONDS = 1.0


class _StoppedWhileInitialising(Exception):
    """A stop was asked while the transactional producer was being initialised."""


def stable_identity(group: str, source: str, instance: str) -> str:
    """``GROUP.SOURCE.INSTANCE`` with the characters Kafka ids do not allow replaced by
    ``_``; a long one is cut and ends in a hash of the whole, so it stays unique and
    the same on every restart."""
    identity = _NOT_IN_IDS.sub("_", f"{group}.{source}.{instance}")
    if len(identity) <= _MAX_IDENTITY:
        return identity
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return f"{identity[: _MAX_IDENTITY - len(digest) - 1]}-{digest}"


def _fenced_instance(error: KafkaError) -> bool:
    """Whether a consumer error says another member took this one's group.instance.id;
    librdkafka raises it as a fatal error that names the broker's error only in text."""
    return error.code() == KafkaError.FENCED_INSTANCE_ID or (
        error.code() == KafkaError._FATAL and "same group.instance.id" in error.str()
    )


class Runner:
    """Consume ``source`` as ``group``, call ``process`` per record, deliver its outputs.

    ``process`` returns ``Message`` objects (produced to Kafka) and ``Row`` objects
    (written to ``sink``). ``guarantee`` decides when positions are committed:

    - at-most-once: the batch's positions are committed before it is processed;
    - at-least-once: positions are committed synchronously after the outputs are
      acknowledged and the sink committed, never past an unprocessed record;
    - exactly-once: outputs and positions go in one Kafka transaction (or, with an
      ``ExactlyOnceSink``, rows and positions go in one database transaction).

    Positions are committed every ``commit_every`` records or ``commit_interval_ms``,
    whichever comes first; one poll returns at most ``max_poll_records`` (default:
    ``commit_every``). Under exactly-once, an abortable error aborts the transaction and
    seeks back to the committed positions; a fenced or fatal one closes the producer,
    builds a new one and joins the group again as a new member (``RunStats`` counts it),
    unless a newer runner with the same identity took its place in the group: then it
    stops with ``InstanceFencedError`` instead of fencing that runner back.

    Identity: ``instance`` names this runner among the runners of its group (default:
    the host name; two runners of one group on one host need different names). The
    identity ``GROUP.SOURCE.INSTANCE`` is stable across restarts: it is the runner's
    ``group.instance.id`` (static membership; ``consumer_overrides={"group.instance.id":
    None}`` opts out) and, under exactly-once, its ``transactional.id``
    (``onceflow-IDENTITY``), so a restarted runner fences its crashed predecessor and
    aborts its open transaction at once.

    Security: ``client_settings`` (``security.protocol``, ``sasl.*``, ``ssl.*``, in
    librdkafka's names; see ``onceflow.client_settings``) go to every client the runner
    makes, its consumer and each producer; ``consumer_overrides`` and
    ``producer_overrides`` win over them, and neither may weaken the guarantee.

    A record whose ``process`` call raises goes, with its error, to the dead-letter
    topic (or dead-letter table of an exactly-once sink) unless ``dead_letters`` is
    False, in which case the runner stops with ``ProcessingError``.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        source: str,
        group: str,
        process: ProcessFn,
        guarantee: Guarantee,
        sink: DatabaseSink | None = None,
        dead_letters: bool = True,
        dead_letter_topic: str | None = None,
        commit_every: int = 100,
        commit_interval_ms: int = 100,
        max_poll_records: int | None = None,
        instance: str | None = None,
        transactional_id: str | None = None,
        consumer_overrides: dict[str, Any] | None = None,
        producer_overrides: dict[str, Any] | None = None,
        fault_hook: FaultHook | None = None,
        timeout: float = 30.0,
        client_settings: Mapping[str, str] | None = None,
    ) -> None:
        if commit_every <= 0 or commit_interval_ms <= 0 or (max_poll_records or 1) <= 0:
            raise RunnerConfigError(
                "commit_every, commit_interval_ms and max_poll_records must be positive"
            )
        if sink is not None and sink.exactly_once and guarantee is not Guarantee.EXACTLY_ONCE:
            raise RunnerConfigError(
                f"an ExactlyOnceSink stores offsets in the database; it needs "
                f"Guarantee.EXACTLY_ONCE, not {guarantee.value}"
            )
        self.bootstrap = bootstrap
        self.source = source
        self.group = group
        self.process = process
        self.guarantee = guarantee
        self.sink = sink
        self.dead_letters = dead_letters
        self.dead_letter_topic = dead_letter_topic or f"{source}.dead-letter"
        self.commit_every = commit_every
        self.commit_interval = commit_interval_ms / 1000
        self.max_poll_records = max_poll_records or commit_every
        self.fault_hook = fault_hook
        self.timeout = timeout
        self.stats = RunStats()
        client_settings = dict(client_settings or {})
        consumer_overrides = client_settings | dict(consumer_overrides or {})
        self.instance = instance or str(
            consumer_overrides.get("group.instance.id") or socket.gethostname()
        )
        #: Stable across restarts of this runner: it names its transactional producer
        #: and, unless overridden, its static group membership (``group.instance.id``).
        self.identity = stable_identity(group, source, self.instance)
        if "group.instance.id" not in consumer_overrides:
            # A restarted member takes its partitions back at once instead of waiting
            # for the dead one's session to expire; None opts out (dynamic membership).
            consumer_overrides["group.instance.id"] = self.identity
        if consumer_overrides["group.instance.id"] is None:
            del consumer_overrides["group.instance.id"]
        # Validated now so a weakening override fails before anything connects.
        self.consumer_settings = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            **consumer_config(guarantee, consumer_overrides),
        }
        strategy = str(self.consumer_settings.get("partition.assignment.strategy", ""))
        # librdkafka refuses to mix cooperative and eager strategies, so one name tells.
        self.cooperative = "cooperative-sticky" in strategy
        self.transactional_id: str | None = None
        if self.db_is_commit_point:
            self.producer_settings: dict[str, Any] | None = None
        else:
            if guarantee is Guarantee.EXACTLY_ONCE:
                # The same id after a restart: init_transactions then aborts the crashed
                # predecessor's open transaction at once, so read_committed consumers do
                # not stall until transaction.timeout.ms. KIP-447 fences zombies by group
                # generation, so the id only has to be unique per live runner.
                self.transactional_id = transactional_id or f"onceflow-{self.identity}"
            self.producer_settings = {
                "bootstrap.servers": bootstrap,
                **producer_config(
                    guarantee,
                    client_settings | dict(producer_overrides or {}),
                    transactional_id=self.transactional_id,
                ),
            }
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self._stopping = threading.Event()
        self._rejoin_requested = False
        self._assigned_at: float | None = None
        self._failed_deliveries: list[KafkaError] = []
        self.policy = policy_for(self)

    @property
    def db_is_commit_point(self) -> bool:
        """True when an exactly-once database sink, not Kafka, owns the positions."""
        return self.sink is not None and self.sink.exactly_once

    # -- lifecycle ---------------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run`` to finish its open work and return (safe from any thread)."""
        self._stopping.set()

    def run(
        self, *, idle_timeout: float | None = None, max_seconds: float | None = None
    ) -> RunStats:
        """Run until ``stop()``, SIGTERM, ``idle_timeout`` seconds without records after
        the first assignment, or ``max_seconds``. Open work is finished before returning."""
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        started = time.monotonic()
        last_record = started
        try:
            self._open()
            assert self.consumer is not None
            while not self._stopping.is_set():
                now = time.monotonic()
                if max_seconds is not None and now - started > max_seconds:
                    break
                records = self._poll()
                if records:
                    last_record = time.monotonic()
                    self.policy.on_batch(records)
                self.policy.maybe_commit(force=False)
                if self._rejoin_requested:
                    self._rejoin()
                if (
                    idle_timeout is not None
                    and self._assigned_at is not None
                    and time.monotonic() - max(last_record, self._assigned_at) > idle_timeout
                ):
                    break
            self.policy.maybe_commit(force=True)
        except BaseException as exc:
            self.policy.abandon()
            # A stop asked while the producer was initialised ends the run like any stop.
            if not isinstance(exc, _StoppedWhileInitialising):
                raise
        finally:
            self._close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return self.stats

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self._stopping.set()

    def _open(self) -> None:
        if self.sink is not None:
            self.sink.setup()
        self.producer = self.new_producer()
        self._join()

    def _join(self) -> None:
        self.consumer = Consumer(client_config(self.consumer_settings))
        self.consumer.subscribe(
            [self.source],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _close_consumer(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close()
            finally:
                self.consumer = None

    def request_rejoin(self) -> None:
        """Leave the group and join again as a new member once the current call returns.

        Used after a fenced or fatal producer error: the member's generation may be the
        reason, and a rebalance callback cannot close its own consumer.
        """
        self._rejoin_requested = True

    def _rejoin(self) -> None:
        self._rejoin_requested = False
        if self.consumer_settings.get("group.instance.id") is not None:
            # Joining with a static id takes the membership from whoever holds it now.
            self.check_identity()
        log.warning("closing the consumer and joining group %s again", self.group)
        self._close_consumer()
        self._assigned_at = None
        self._join()
        self.stats.rejoins += 1

    def _close(self) -> None:
        self._close_consumer()
        if self.producer is not None:
            producer, self.producer = self.producer, None
            try:
                producer.flush(self.timeout)
            except KafkaException as exc:
                # A fenced producer cannot flush; the error that fenced it was raised.
                log.error("producer flush on close failed: %s", exc)

    def check_identity(self) -> Membership:
        """Ask the group coordinator whether this runner is still its group's member;
        raise ``InstanceFencedError`` if a newer runner holds its identity."""
        member_id = (self.consumer.memberid() if self.consumer is not None else None) or ""
        state = membership(self.consumer_settings, member_id, timeout=self.timeout)
        if state is Membership.REPLACED:
            raise self.identity_taken()
        return state

    def identity_taken(self) -> InstanceFencedError:
        """The error to stop with: a newer runner holds this one's identity (counted)."""
        self.stats.errors.append("FENCED_INSTANCE_ID")
        instance_id = self.consumer_settings.get("group.instance.id")
        return InstanceFencedError(self.identity, self.group, instance_id)

    def rebuild_producer(self) -> None:
        """Close the producer and build a new one; its transaction, if any, is lost.

        A new transactional producer fences every other holder of the transactional id,
        so it is built only while no newer runner holds this runner's identity."""
        old, self.producer = self.producer, None
        if old is not None:
            try:
                # Queued records belong to the dead transaction: they must not be sent.
                old.purge()
                # Producer.close() is new in confluent-kafka 2.13; older ones close when
                # the object is freed, which the reassignment below lets happen.
                close = getattr(old, "close", None)
                if close is not None:
                    close()
            except KafkaException as exc:
                log.info("closing the failed producer: %s", exc)
        self.take_delivery_failures()
        if self.transactional_id is not None:
            self.check_identity()
        self.producer = self.new_producer()
        self.stats.producer_rebuilds += 1

    def new_producer(self) -> Producer | None:
        """A fresh producer; transactional ones are initialised (fencing older ones)."""
        if self.producer_settings is None:
            return None
        producer = Producer(
            client_config(self.producer_settings) | {"on_delivery": self._on_delivery}
        )
        if self.transactional_id is not None:
            self._init_transactions(producer)
        return producer

    def _init_transactions(self, producer: Producer) -> None:
        """init_transactions within ``timeout``, in slices: a coordinator that answers
        COORDINATOR_LOAD_IN_PROGRESS (after a broker failover, say) can keep the call
        busy for its whole timeout, and a runner asked to stop meanwhile must stop."""
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                producer.init_transactions(min(INIT_SLICE_SECONDS, remaining))
                return
            except KafkaException as exc:
                error = exc.args[0]
                if not error.retriable() or remaining <= INIT_SLICE_SECONDS:
                    raise
            if self._stopping.is_set():
                raise _StoppedWhileInitialising

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._failed_deliveries.append(err)

    def take_delivery_failures(self) -> list[KafkaError]:
        """Delivery errors reported since the last call."""
        failures, self._failed_deliveries = self._failed_deliveries, []
        return failures

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # A cooperative rebalance may hand a member nothing in its first round and the
        # partitions in a later one: only partitions arriving restart the idle clock.
        if partitions or not self.cooperative:
            self._assigned_at = time.monotonic()
        self.policy.on_assign(consumer, partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.revoked += len(partitions)
        self.policy.on_revoke(consumer, partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.lost += len(partitions)
        self.policy.on_lost(consumer, partitions)

    # -- the loop's parts, used by the policies -------------------------------------------

    def fault(self, point: str) -> None:
        """Give the fault hook a chance to crash the process at ``point``."""
        if self.fault_hook is not None:
            self.fault_hook(point)

    def _poll(self) -> list[Record]:
        assert self.consumer is not None
        records: list[Record] = []
        for message in self.consumer.consume(num_messages=self.max_poll_records, timeout=0.1):
            error = message.error()
            if error is None:
                records.append(Record.from_kafka(message))
            elif _fenced_instance(error):
                raise self.identity_taken() from KafkaException(error)
            elif error.fatal() or error.code() == KafkaError._FATAL:
                # A fatal consumer error arrives as _FATAL with fatal() unset: nothing
                # more will be consumed, so stop and let the supervisor restart the runner.
                raise KafkaException(error)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", error)
        return records

    def handle(self, record: Record) -> None:
        """Process one record and hand its outputs to Kafka or the sink."""
        try:
            outputs = list(self.process(record))
        except Exception as exc:
            if not self.dead_letters:
                raise ProcessingError(f"process failed on {record.source_key}: {exc!r}") from exc
            self._dead_letter(record, exc)
            self.stats.dead_lettered += 1
            self.stats.processed += 1
            return
        for index, output in enumerate(outputs):
            if isinstance(output, Message):
                if self.producer is None:
                    raise RunnerConfigError(
                        "an ExactlyOnceSink owns the positions, so Kafka outputs cannot be "
                        "part of the same commit; use an IdempotentSink with Kafka outputs"
                    )
                self.produce(output)
            elif isinstance(output, Row):
                if self.sink is None:
                    raise RunnerConfigError("process returned a Row but the runner has no sink")
                self.sink.write(record, index, output)
            else:
                raise TypeError(f"process must return Message or Row objects, got {output!r}")
        self.stats.processed += 1

    def _dead_letter(self, record: Record, exc: Exception) -> None:
        error = "".join(traceback.format_exception_only(exc)).strip()
        log.warning("dead-lettering %s: %s", record.source_key, error)
        if self.db_is_commit_point:
            assert self.sink is not None
            self.sink.write_dead_letter(record, error)
            return
        headers = (
            *record.headers,
            ("onceflow.error", error.encode()),
            ("onceflow.source", record.source_key.encode()),
        )
        self.produce(Message(self.dead_letter_topic, record.value, record.key, headers))

    def produce(self, message: Message) -> None:
        """Produce, waiting (bounded) for room in the local queue."""
        assert self.producer is not None
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self.producer.produce(
                    message.topic, value=message.value, key=message.key,
                    headers=list(message.headers) or None,
                )  # fmt: skip
                break
            except BufferError:
                if time.monotonic() > deadline:
                    raise
                self.producer.poll(0.05)
        self.producer.poll(0)

    def assignment(self) -> list[TopicPartition]:
        assert self.consumer is not None
        return list(self.consumer.assignment())

    def rewind(self, positions: dict[TopicPartitionKey, int] | None = None) -> None:
        """Seek every assigned partition back to ``positions`` or, by default, to its
        committed offset, so uncommitted work is done again."""
        assert self.consumer is not None
        assigned = self.assignment()
        if not assigned:
            return
        if positions is None:
            committed = self.consumer.committed(assigned, timeout=self.timeout)
            positions = {(tp.topic, tp.partition): tp.offset for tp in committed}
        reset = str(self.consumer_settings.get("auto.offset.reset", "earliest"))
        fallback = OFFSET_END if reset in ("latest", "largest", "end") else OFFSET_BEGINNING
        for tp in assigned:
            offset = positions.get((tp.topic, tp.partition), -1)
            self.consumer.seek(
                TopicPartition(tp.topic, tp.partition, offset if offset >= 0 else fallback)
            )
