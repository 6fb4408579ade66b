"""The transaction coordinator: transactional ids, epochs, and the two-phase commit.

Every state change is written to a journal. Ending a transaction goes
PREPARE_COMMIT/PREPARE_ABORT (durable) -> markers on every partition of the transaction
(durable) -> pending group offsets materialised on commit -> COMPLETE_*. As in Kafka's
coordinator, EndTxn is answered once the PREPARE record is durable: the decision is then
final (a restart completes a prepared transaction), and the markers are written and
synced after the answer. Until they are, the transaction is prepared: its producer's
next transactional request meets CONCURRENT_TRANSACTIONS (clients retry it), and each
partition keeps its last stable offset below the transaction until its marker is durable.
A new epoch (InitProducerId) is durable before it is handed out, since fencing must
survive a crash.

Additions to an ongoing transaction (AddPartitionsToTxn, AddOffsetsToTxn, and the
offsets TxnOffsetCommit stages) are answered once written, without waiting for an fsync:
they only matter to a transaction that commits, and the fsync of its PREPARE_COMMIT
record (which repeats them) is durable before the commit is answered. Unsynced
records survive a crash of the broker process (the page cache keeps them), so after a
restart on the same boot ongoing transactions resume as in Kafka: their producer may
still commit them, or the timeout aborts them. After an operating-system crash (a new
boot id, without a clean shutdown before it) unsynced records may be gone, even the one
saying that a transaction began, so every transactional producer is fenced and every
ongoing transaction aborted: a producer in the middle of one fails, and nothing it
was told is committed is lost. A restart also aborts transactions that a partition
shows open but the coordinator does not know.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.log.atomic import read_json, write_json_atomically
from onceflow.broker.log.journal import Journal

log = logging.getLogger(__name__)

MAX_EPOCH = 32767
#: Like Kafka's transaction.max.timeout.ms.
MAX_TRANSACTION_TIMEOUT_MS = 15 * 60 * 1000
EXPIRY_CHECK_SECONDS = 0.25
COORDINATOR_EPOCH = 0
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
TopicPartition = tuple[str, int]


class TxnState(enum.StrEnum):
    EMPTY = "Empty"
    ONGOING = "Ongoing"
    PREPARE_COMMIT = "PrepareCommit"
    PREPARE_ABORT = "PrepareAbort"
    COMPLETE_COMMIT = "CompleteCommit"
    COMPLETE_ABORT = "CompleteAbort"


PREPARED = (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT)


class TxnError(Exception):
    """A transactional request that must be refused with ``code``."""

    def __init__(
        self, code: ErrorCode, message: str = "", completing: asyncio.Future[None] | None = None
    ) -> None:
        super().__init__(message or code.name)
        self.code = code
        #: For CONCURRENT_TRANSACTIONS: the completion of the producer's previous
        #: transaction, after which the request may succeed.
        self.completing = completing


@dataclasses.dataclass
class Transaction:
    transactional_id: str
    producer_id: int
    epoch: int
    timeout_ms: int
    state: TxnState = TxnState.EMPTY
    #: The epoch before a coordinator-side bump (timeout abort), for KIP-360 recovery.
    last_epoch: int = -1
    partitions: set[TopicPartition] = dataclasses.field(default_factory=set)
    #: group id -> {(topic, partition): (offset, leader epoch, metadata)}
    pending_offsets: dict[str, dict[TopicPartition, tuple[int, int, str | None]]] = (
        dataclasses.field(default_factory=dict)
    )
    started_ms: int = 0
    #: Set when prepared: where the transaction's data starts on each of its partitions
    #: (None: no data there). A marker is written only where that is still what is
    #: open, never on a later transaction of the same producer (see ``_complete``).
    first_offsets: dict[TopicPartition, int | None] | None = None

    def to_json(self) -> dict[str, Any]:
        firsts = self.first_offsets
        return {
            "id": self.transactional_id,
            "pid": self.producer_id,
            "epoch": self.epoch,
            "last_epoch": self.last_epoch,
            "timeout_ms": self.timeout_ms,
            "state": self.state.value,
            "partitions": sorted([t, p] for t, p in self.partitions),
            "offsets": {
                group: [[t, p, *value] for (t, p), value in offsets.items()]
                for group, offsets in self.pending_offsets.items()
            },
            "started_ms": self.started_ms,
            **(
                {}
                if firsts is None
                else {"first_offsets": sorted([t, p, o] for (t, p), o in firsts.items())}
            ),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Transaction:
        return cls(
            transactional_id=raw["id"],
            producer_id=raw["pid"],
            epoch=raw["epoch"],
            last_epoch=raw["last_epoch"],
            timeout_ms=raw["timeout_ms"],
            state=TxnState(raw["state"]),
            partitions={(t, p) for t, p in raw["partitions"]},
            pending_offsets={
                group: {(t, p): (offset, epoch, meta) for t, p, offset, epoch, meta in entries}
                for group, entries in raw["offsets"].items()
            },
            started_ms=raw["started_ms"],
            first_offsets=(
                None
                if "first_offsets" not in raw
                else {(t, p): o for t, p, o in raw["first_offsets"]}
            ),
        )


def _now_ms() -> int:
    return int(time.time() * 1000)


def current_boot_id() -> str | None:
    """The kernel's id of this boot (Linux); None where it cannot be read."""
    try:
        return BOOT_ID_FILE.read_text().strip()
    except OSError:
        return None


class TransactionCoordinator:
    """Owns every transactional id's state; runs on the broker's event loop."""

    def __init__(
        self,
        broker: Any,
        journal: Journal,
        materialize_offsets: Callable[[str, dict[TopicPartition, Any]], Awaitable[None] | None],
        run_state: Path,
    ) -> None:
        self._broker = broker
        self._journal = journal
        self._materialize_offsets = materialize_offsets
        # Whether unsynced journal records of the previous run can be trusted: yes after
        # a clean shutdown or a crash of the process alone (same boot), no otherwise.
        self._run_state = run_state
        previous = read_json(run_state)
        self._boot_id = current_boot_id()
        self.previous_run_trusted = (
            previous is None
            or previous["clean"]
            or (self._boot_id is not None and previous["boot_id"] == self._boot_id)
        )
        write_json_atomically(run_state, {"boot_id": self._boot_id, "clean": False})
        self.transactions: dict[str, Transaction] = {}
        self._by_producer: dict[int, Transaction] = {}
        self._expiry: asyncio.Task[None] | None = None
        #: Transactions answered as ended whose markers are still being made durable,
        #: by transactional id.
        self._completing: dict[str, asyncio.Task[None]] = {}
        for raw in journal.replay():
            self._index(Transaction.from_json(raw))

    def _index(self, txn: Transaction) -> None:
        self.transactions[txn.transactional_id] = txn
        self._by_producer[txn.producer_id] = txn

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Finish what a crash interrupted, then start enforcing timeouts."""
        for txn in list(self.transactions.values()):
            if txn.state in PREPARED:
                await self._complete(txn)
        if not self.previous_run_trusted:
            await self._fence_all()
        await self._abort_hanging()
        self._expiry = asyncio.create_task(self._expire_forever())

    async def _fence_all(self) -> None:
        """After an operating-system crash, fence every transactional producer. The
        journal's unsynced tail may be gone, and with it the record that a transaction
        began: its producer would otherwise still hold its epoch, and its EndTxn would
        meet the previous transaction's completion and be answered as a retry of it,
        while the data it wrote is aborted as hanging."""
        waits: list[Awaitable[None] | None] = []
        for txn in list(self.transactions.values()):
            waits.append(self._bump_epoch(txn))
            if txn.state is TxnState.ONGOING:
                log.warning(
                    "aborting transaction %r: the machine restarted since it was written",
                    txn.transactional_id,
                )
                # Every abort started before any is awaited: they share flush rounds.
                waits.append(self._prepare(txn, commit=False).completed)
            else:
                waits.append(self._journal.append(txn.to_json()))
        await _all(waits)

    async def drain(self) -> None:
        """Wait for the transactions whose markers are being written (at shutdown)."""
        while self._completing:
            await asyncio.gather(*self._completing.values(), return_exceptions=True)

    def close(self, durably: bool = True) -> None:
        """Stop enforcing timeouts and compact the journal (at shutdown). When the data
        dir is offline (``durably`` False) nothing is written: the next start must not
        take the journal for cleanly closed."""
        if self._expiry is not None:
            self._expiry.cancel()
        if not durably:
            self._journal.close()
            return
        self._journal.rewrite([t.to_json() for t in self.transactions.values()])
        self._journal.close()
        write_json_atomically(self._run_state, {"boot_id": self._boot_id, "clean": True})

    async def _abort_hanging(self) -> None:
        """Abort transactions left open in a partition that no coordinator state covers."""
        waits = []
        for topic in self._broker.topics.topics.values():
            for index, partition in enumerate(topic.partitions):
                for producer_id in list(partition.ongoing):
                    txn = self._by_producer.get(producer_id)
                    covered = (
                        txn is not None
                        and txn.state is TxnState.ONGOING
                        and (topic.name, index) in txn.partitions
                    )
                    if not covered:
                        log.warning(
                            "aborting hanging transaction of producer %d on %s-%d",
                            producer_id, topic.name, index,
                        )  # fmt: skip
                        epoch = partition.producers.entries[producer_id].epoch
                        partition.append_marker(producer_id, epoch, False, COORDINATOR_EPOCH)
                        waits.append(self._broker.make_durable(partition))
        await _all(waits)

    # -- InitProducerId --------------------------------------------------------

    def init_producer_id(
        self, transactional_id: str, timeout_ms: int, producer_id: int, epoch: int
    ) -> Awaitable[tuple[int, int]]:
        """(producer id, epoch) for a transactional producer, fencing older incarnations."""
        self._check_online()
        if not 0 < timeout_ms <= MAX_TRANSACTION_TIMEOUT_MS:
            raise TxnError(
                ErrorCode.invalid_transaction_timeout,
                f"transaction.timeout.ms must be in 1..{MAX_TRANSACTION_TIMEOUT_MS}",
            )
        txn = self.transactions.get(transactional_id)
        if txn is None:
            if producer_id != -1:
                raise TxnError(ErrorCode.invalid_producer_id_mapping)
            producer_id, reserved = self._broker.producer_ids.allocate()
            txn = Transaction(transactional_id, producer_id, 0, timeout_ms)
            self._index(txn)
            return self._persist_then(txn, lambda: (txn.producer_id, txn.epoch), reserved)
        if txn.state in PREPARED:
            raise self._concurrent(txn)
        if producer_id != -1:
            # KIP-360: a producer re-initialising with its own id and epoch keeps its id.
            if producer_id != txn.producer_id:
                raise TxnError(ErrorCode.invalid_producer_id_mapping)
            if epoch not in (txn.epoch, txn.last_epoch):
                raise TxnError(ErrorCode.producer_fenced)
        reserved = self._bump_epoch(txn)
        # The previous incarnation's transaction can never finish: abort it.
        aborting = None
        if txn.state is TxnState.ONGOING:
            aborting = self._prepare(txn, commit=False).completed
        return self._reinit(txn, timeout_ms, aborting, reserved)

    async def _reinit(
        self,
        txn: Transaction,
        timeout_ms: int,
        aborting: Awaitable[None] | None,
        reserved: Awaitable[None] | None,
    ) -> tuple[int, int]:
        if aborting is not None:
            # Shielded: a producer that goes away must not stop the abort's markers.
            await asyncio.shield(aborting)
        txn.timeout_ms = timeout_ms
        txn.state = TxnState.EMPTY
        await _all([self._journal.append(txn.to_json()), reserved])
        return txn.producer_id, txn.epoch

    def _bump_epoch(self, txn: Transaction) -> asyncio.Future[None] | None:
        """Fence the current epoch; returns the reservation of a new producer id when
        the epochs ran out (None when no id changed). The broker's start skips ids found
        in the journal, so a crash before the reservation lands cannot reuse one."""
        txn.last_epoch = txn.epoch
        if txn.epoch + 1 >= MAX_EPOCH:
            del self._by_producer[txn.producer_id]
            txn.producer_id, reserved = self._broker.producer_ids.allocate()
            txn.epoch = 0
            self._by_producer[txn.producer_id] = txn
            return reserved
        txn.epoch += 1
        return None

    # -- adding to a transaction -----------------------------------------------

    def _check_online(self) -> None:
        """Refuse coordinator work once the data dir is offline: nothing can be durable."""
        if self._broker.storage_error is not None:
            raise TxnError(ErrorCode.coordinator_not_available, str(self._broker.storage_error))

    def _active(self, transactional_id: str, producer_id: int, epoch: int) -> Transaction:
        self._check_online()
        txn = self.transactions.get(transactional_id)
        if txn is None or txn.producer_id != producer_id:
            raise TxnError(ErrorCode.invalid_producer_id_mapping)
        if epoch != txn.epoch:
            raise TxnError(ErrorCode.producer_fenced)
        if txn.state in PREPARED:
            raise self._concurrent(txn)
        return txn

    def _begin(self, txn: Transaction) -> None:
        if txn.state is not TxnState.ONGOING:
            txn.state = TxnState.ONGOING
            txn.partitions.clear()
            txn.pending_offsets.clear()
            txn.started_ms = _now_ms()

    def add_partitions(
        self, transactional_id: str, producer_id: int, epoch: int, partitions: list[TopicPartition]
    ) -> None:
        txn = self._active(transactional_id, producer_id, epoch)
        self._begin(txn)
        txn.partitions.update(partitions)
        self._written(txn)

    def add_offsets(
        self, transactional_id: str, producer_id: int, epoch: int, group_id: str
    ) -> None:
        txn = self._active(transactional_id, producer_id, epoch)
        self._begin(txn)
        txn.pending_offsets.setdefault(group_id, {})
        self._written(txn)

    def stage_offsets(
        self,
        transactional_id: str,
        producer_id: int,
        epoch: int,
        group_id: str,
        offsets: dict[TopicPartition, tuple[int, int, str | None]],
    ) -> None:
        """TxnOffsetCommit: offsets wait in the transaction until it commits."""
        txn = self._active(transactional_id, producer_id, epoch)
        if txn.state is not TxnState.ONGOING or group_id not in txn.pending_offsets:
            raise TxnError(
                ErrorCode.invalid_txn_state, f"AddOffsetsToTxn for group {group_id!r} came first?"
            )
        txn.pending_offsets[group_id].update(offsets)
        # Unlike a plain offset commit, nothing is stored until the transaction commits.
        self._written(txn)

    def pending_offsets(self, group_id: str) -> set[TopicPartition]:
        """Partitions of ``group_id`` with offsets staged by a transaction not yet ended."""
        return {
            tp
            for txn in self.transactions.values()
            if txn.state is TxnState.ONGOING or txn.state in PREPARED
            for tp in txn.pending_offsets.get(group_id, ())
        }

    def verify_produce(self, producer_id: int, epoch: int, topic: str, partition: int) -> ErrorCode:
        """May a transactional batch be appended? Only within the producer's current
        epoch and to a partition added to its ongoing transaction."""
        txn = self._by_producer.get(producer_id)
        if txn is None:
            return ErrorCode.invalid_producer_id_mapping
        if epoch < txn.epoch:
            return ErrorCode.invalid_producer_epoch
        if txn.state is not TxnState.ONGOING or (topic, partition) not in txn.partitions:
            return ErrorCode.invalid_txn_state
        return ErrorCode.none

    # -- ending ----------------------------------------------------------------

    def end_txn(
        self, transactional_id: str, producer_id: int, epoch: int, commit: bool
    ) -> Awaitable[None] | None:
        """Answered (the awaitable completes) once the decision is durable; None for a
        retry of an EndTxn that already completed."""
        self._check_online()
        txn = self.transactions.get(transactional_id)
        if txn is None or txn.producer_id != producer_id:
            raise TxnError(ErrorCode.invalid_producer_id_mapping)
        if epoch != txn.epoch:
            raise TxnError(ErrorCode.producer_fenced)
        wanted = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
        if txn.state is wanted:
            return None  # a retry of an EndTxn that already completed
        if txn.state in PREPARED:
            raise self._concurrent(txn)
        if txn.state is not TxnState.ONGOING:
            raise TxnError(
                ErrorCode.invalid_txn_state,
                f"cannot {'commit' if commit else 'abort'} in state {txn.state.value}",
            )
        # Answered once the decision is durable; the markers follow in the background.
        decided = self._prepare(txn, commit).decided
        # Shielded: the completion awaits the same future, and a client that goes away
        # (its answer cancelled) must not cancel the decision with it.
        return None if decided is None else asyncio.shield(decided)

    def _prepare(self, txn: Transaction, commit: bool) -> _Ending:
        """Enter the prepared state now (concurrent requests see it at once) and
        complete the transaction in the background once the decision is durable."""
        txn.state = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
        txn.first_offsets = {}
        for topic, index in txn.partitions:
            partition = self._broker.topics.partition(topic, index)
            open_at = None if partition is None else partition.ongoing.get(txn.producer_id)
            txn.first_offsets[(topic, index)] = open_at
        decided = self._journal.append(txn.to_json())
        completed = asyncio.ensure_future(self._complete_after(decided, txn))
        self._completing[txn.transactional_id] = completed
        completed.add_done_callback(lambda task: self._completion_done(txn, task))
        return _Ending(decided, completed)

    async def _complete_after(self, decided: Awaitable[None] | None, txn: Transaction) -> None:
        await _all([decided])
        await self._complete(txn)

    def _concurrent(self, txn: Transaction) -> TxnError:
        """CONCURRENT_TRANSACTIONS for a request that meets ``txn`` prepared."""
        return TxnError(
            ErrorCode.concurrent_transactions,
            completing=self._completing.get(txn.transactional_id),
        )

    def _completion_done(self, txn: Transaction, task: asyncio.Task[None]) -> None:
        if self._completing.get(txn.transactional_id) is task:
            del self._completing[txn.transactional_id]
        if task.cancelled():
            return
        exc = task.exception()
        # A storage failure is logged once by the flusher; the prepared state stays in
        # the journal and the next start completes it.
        if exc is not None and not isinstance(exc, OSError):
            log.error("completing a transaction failed", exc_info=exc)

    async def _complete(self, txn: Transaction) -> None:
        """Write the markers of a prepared transaction and record its completion."""
        commit = txn.state is TxnState.PREPARE_COMMIT
        waits = []
        for topic, index in sorted(txn.partitions):
            partition = self._broker.topics.partition(topic, index)
            if partition is None:
                continue  # the topic was deleted
            firsts = txn.first_offsets
            if firsts is not None and partition.ongoing.get(txn.producer_id) != firsts.get(
                (topic, index)
            ):
                # Its marker is there already (a restart completes a prepared transaction
                # again if its completion was not durable); what is open now is a later
                # transaction of the producer, which recovery aborts as hanging.
                continue
            if partition.append_marker(txn.producer_id, txn.epoch, commit, COORDINATOR_EPOCH):
                waits.append(self._broker.make_durable(partition))
        if commit:
            for group, offsets in txn.pending_offsets.items():
                waits.append(self._materialize_offsets(group, offsets))
        await _all(waits)
        txn.state = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
        txn.partitions.clear()
        txn.pending_offsets.clear()
        txn.first_offsets = None
        # Synced by the next flush round, whatever starts it: a crash before replays the
        # prepared state, and completing it again is harmless (markers are only written
        # where this transaction is still open).
        self._journal.append(txn.to_json(), durable=False)
        self._broker.flusher.piggyback(self._journal)
        self._maybe_compact()

    # -- timeouts --------------------------------------------------------------

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_CHECK_SECONDS)
            now = _now_ms()
            for txn in list(self.transactions.values()):
                if txn.state is TxnState.ONGOING and now - txn.started_ms > txn.timeout_ms:
                    log.info("aborting transaction %r: timed out", txn.transactional_id)
                    # Fence the silent producer: its epoch can no longer write or commit.
                    self._bump_epoch(txn)
                    try:
                        await self._prepare(txn, commit=False).completed
                    except OSError:
                        return  # the data dir is offline: logged once by the flusher
                    except Exception:
                        log.exception("aborting %r failed", txn.transactional_id)

    # -- persistence -----------------------------------------------------------

    def _written(self, txn: Transaction) -> None:
        """Journal a change to an ongoing transaction without waiting for its fsync
        (see the module docstring for why that is safe): its request is answered at
        once, with no task or loop iteration in between."""
        self._journal.append(txn.to_json(), durable=False)

    def _persist_then(
        self, txn: Transaction, result: Callable[[], Any], also: Awaitable[None] | None = None
    ) -> Awaitable[Any]:
        """Journal the state now; the awaitable yields ``result()`` once it (and
        ``also``) is durable."""
        journaled = self._journal.append(txn.to_json())
        return _then(journaled if also is None else _all([journaled, also]), result)

    def _maybe_compact(self) -> None:
        if self._journal.rewriting is None and self._journal.records_written > 1000 + 10 * len(
            self.transactions
        ):
            self._journal.rewrite_off_loop([t.to_json() for t in self.transactions.values()])

    def describe(self) -> Iterable[Transaction]:
        return self.transactions.values()


@dataclasses.dataclass(frozen=True, slots=True)
class _Ending:
    """A transaction being ended: ``decided`` completes once its PREPARE record is
    durable (None: durable at once), ``completed`` once its markers are."""

    decided: Awaitable[None] | None
    completed: asyncio.Task[None]


async def _all(waits: list[Awaitable[None] | None]) -> None:
    pending = [w for w in waits if w is not None]
    if len(pending) == 1:
        await pending[0]  # without a gather, whose callback costs a loop iteration
    elif pending:
        await asyncio.gather(*pending)


async def _then(wait: Awaitable[None] | None, result: Callable[[], Any]) -> Any:
    await _all([wait])
    return result()
