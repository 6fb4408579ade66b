"""Idempotent producer state of one partition.

Per producer id the broker remembers the epoch and the sequence ranges of the last
five batches it appended, so that a retried batch is answered with its original
offsets instead of being appended twice, and a gap is refused.

A retry is the same batch, byte for byte, so its checksum is remembered too: a batch
whose sequences were used by a different one is refused as out of order, not
answered with the other's offsets (an acknowledgement of records that are not in the
log). librdkafka sends one after a transaction aborted while a batch's answer was lost
(the broker killed): it takes the unacknowledged batch as not written and gives its
sequences to the next transaction's records, in the same epoch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from kio.schema.errors import ErrorCode

from onceflow.broker.records import TIMESTAMP_TYPE_BIT, BatchHeader, InvalidBatch

# Kafka keeps the same number of batches (max.in.flight.requests.per.connection <= 5).
BATCHES_KEPT = 5


@dataclass(frozen=True, slots=True)
class AppendedBatch:
    first_sequence: int
    last_sequence: int
    base_offset: int
    last_offset: int
    #: The batch's checksum as its producer sent it; None when unknown (the broker
    #: stamped a log append time over the client's, or a snapshot older than this).
    crc: int | None = None


@dataclass(slots=True)
class ProducerEntry:
    epoch: int
    batches: deque[AppendedBatch] = field(default_factory=lambda: deque(maxlen=BATCHES_KEPT))
    #: Max timestamp of the producer's last batch (DescribeProducers reports it); -1: none.
    last_timestamp: int = -1

    @property
    def last_sequence(self) -> int:
        return self.batches[-1].last_sequence if self.batches else -1


class Duplicate(Exception):
    """A retry of a batch already in the log; carries the original placement."""

    def __init__(self, batch: AppendedBatch) -> None:
        super().__init__("duplicate batch")
        self.batch = batch


class ProducerStates:
    """Sequence and epoch bookkeeping for every idempotent producer of one partition."""

    def __init__(self) -> None:
        self.entries: dict[int, ProducerEntry] = {}

    def check(self, header: BatchHeader) -> None:
        """Decide whether a produced batch may be appended.

        Raises Duplicate for a retry of one of the last batches, InvalidBatch for a
        fenced epoch or a sequence gap.
        """
        entry = self.entries.get(header.producer_id)
        if entry is None:
            # Unknown here (new producer, or its state expired): any sequence starts it.
            return
        if header.producer_epoch < entry.epoch:
            raise InvalidBatch(
                ErrorCode.invalid_producer_epoch,
                f"producer {header.producer_id} epoch {header.producer_epoch} is fenced "
                f"by epoch {entry.epoch}",
            )
        if header.producer_epoch > entry.epoch:
            if header.base_sequence != 0:
                raise InvalidBatch(
                    ErrorCode.out_of_order_sequence_number,
                    f"a new epoch must start at sequence 0, got {header.base_sequence}",
                )
            return
        expected = (entry.last_sequence + 1) % 2**31
        for batch in entry.batches:
            if (
                batch.first_sequence == header.base_sequence
                and batch.last_sequence == header.last_sequence
            ):
                if batch.crc is not None and batch.crc != header.crc:
                    raise InvalidBatch(
                        ErrorCode.out_of_order_sequence_number,
                        f"producer {header.producer_id}: sequences {batch.first_sequence}-"
                        f"{batch.last_sequence} were used by another batch (offset "
                        f"{batch.base_offset}); expected {expected}",
                    )
                raise Duplicate(batch)
        if header.base_sequence != expected:
            raise InvalidBatch(
                ErrorCode.out_of_order_sequence_number,
                f"producer {header.producer_id}: expected sequence {expected}, "
                f"got {header.base_sequence}",
            )

    def record(self, header: BatchHeader) -> None:
        """Remember an appended (offset-patched) batch."""
        entry = self.entries.get(header.producer_id)
        if entry is None or header.producer_epoch != entry.epoch:
            entry = ProducerEntry(header.producer_epoch)
            self.entries[header.producer_id] = entry
        # A batch stamped with the log append time no longer has the client's checksum.
        crc = None if header.attributes & TIMESTAMP_TYPE_BIT else header.crc
        entry.batches.append(
            AppendedBatch(
                header.base_sequence,
                header.last_sequence,
                header.base_offset,
                header.last_offset,
                crc,
            )
        )
        entry.last_timestamp = header.max_timestamp

    def bump_epoch(self, producer_id: int, epoch: int) -> None:
        """A transaction marker carries the producer's current epoch: older ones are fenced
        from now on; within the same epoch sequences continue across transactions."""
        entry = self.entries.get(producer_id)
        if entry is None or epoch > entry.epoch:
            self.entries[producer_id] = ProducerEntry(epoch)

    def to_json(self) -> dict[str, object]:
        return {
            str(pid): {
                "epoch": entry.epoch,
                "last_timestamp": entry.last_timestamp,
                "batches": [
                    [b.first_sequence, b.last_sequence, b.base_offset, b.last_offset, b.crc]
                    for b in entry.batches
                ],
            }
            for pid, entry in self.entries.items()
        }

    @classmethod
    def from_json(cls, data: dict[str, dict]) -> ProducerStates:
        states = cls()
        for pid, raw in data.items():
            # Snapshots written before last_timestamp was kept have none.
            entry = ProducerEntry(
                int(raw["epoch"]), last_timestamp=int(raw.get("last_timestamp", -1))
            )
            # Snapshots written before checksums were kept have four fields per batch.
            entry.batches.extend(AppendedBatch(*b) for b in raw["batches"])
            states.entries[int(pid)] = entry
        return states
