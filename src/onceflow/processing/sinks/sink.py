"""Database sinks: idempotent (unique key) and exactly-once (offsets in the same transaction).

Both write each ``Row`` into a results table whose primary key is the row's business key
or, by default, the source record's (topic, partition, offset). ``apply`` lets the user
turn a newly written row into further effects (e.g. a balance update) inside the same
database transaction, so an effect happens exactly when its row is first written.

Rows are staged in memory as the runner processes records and written at ``commit``, in
one short database transaction: no lock is held between commits, so a runner that
stalls (a zombie) blocks nobody, and the writes of one commit can be batched.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from onceflow.processing.errors import PartitionsFencedError
from onceflow.processing.records import Record, Row
from onceflow.processing.sinks.database import Database

log = logging.getLogger(__name__)

TopicPartitionKey = tuple[str, int]
ApplyFn = Callable[[Database, Row, Record], None]

OFFSETS_TABLE = "onceflow_offsets"
DEAD_LETTER_TABLE = "onceflow_dead_letters"
#: ``next_offset`` of a partition that was claimed but has no committed position yet.
NO_OFFSET = -1


@dataclass(frozen=True)
class _Staged:
    """One row waiting for the next commit."""

    record: Record
    key: str
    row: Row


class DatabaseSink:
    """Shared machinery of the two sinks; use ``IdempotentSink`` or ``ExactlyOnceSink``."""

    exactly_once: ClassVar[bool] = False

    def __init__(
        self, db: Database, *, table: str = "onceflow_results", apply: ApplyFn | None = None
    ) -> None:
        if not table.replace("_", "").isalnum():
            raise ValueError(f"table name must be an identifier, got {table!r}")
        self.db = db
        self.table = table
        self.apply = apply
        self._rows: list[_Staged] = []
        self._dead_letters: list[tuple[Record, str]] = []

    def setup(self) -> None:
        """Create the sink's tables if they do not exist."""
        self.db.begin()
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (key TEXT PRIMARY KEY, "
            "src_topic TEXT NOT NULL, src_partition INTEGER NOT NULL, "
            "src_offset BIGINT NOT NULL, value TEXT)"
        )
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {OFFSETS_TABLE} (grp TEXT NOT NULL, "
            "topic TEXT NOT NULL, part INTEGER NOT NULL, next_offset BIGINT NOT NULL, "
            "generation BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (grp, topic, part))"
        )
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {DEAD_LETTER_TABLE} (src_key TEXT PRIMARY KEY, "
            "src_topic TEXT NOT NULL, src_partition INTEGER NOT NULL, "
            "src_offset BIGINT NOT NULL, value TEXT, error TEXT NOT NULL)"
        )
        self.db.commit()
        self._add_generation_column()

    def _add_generation_column(self) -> None:
        """Offsets tables made before zombie fencing lack the owner generation."""
        try:
            self.db.query(f"SELECT generation FROM {OFFSETS_TABLE} WHERE 1 = 0")
            return
        except Exception:  # the driver's "no such column" error; its class differs per DB
            self.db.rollback()
        self.db.begin()
        self.db.execute(
            f"ALTER TABLE {OFFSETS_TABLE} ADD COLUMN generation BIGINT NOT NULL DEFAULT 0"
        )
        self.db.commit()

    def _insert_sql(self) -> str:
        raise NotImplementedError

    def write(self, record: Record, index: int, row: Row) -> None:
        """Stage one row for the next commit."""
        key = row.key if row.key is not None else f"{record.source_key}/{index}"
        self._rows.append(_Staged(record, key, row))

    def write_dead_letter(self, record: Record, error: str) -> None:
        """Stage a poison record and its error for the next commit."""
        self._dead_letters.append((record, error))

    def commit(self, group: str, offsets: Mapping[TopicPartitionKey, int]) -> list[str]:
        """Write the staged rows (and, for an exactly-once sink, ``offsets``) in one
        database transaction; return the keys of the rows that were new, in order.

        Raises ``PartitionsFencedError`` (after rolling back) when an exactly-once sink
        no longer owns a partition of ``offsets``.
        """
        if not self._rows and not self._dead_letters and not self._stores_offsets(offsets):
            return []
        self.db.begin()
        try:
            # Offsets first: a fenced runner stops before touching the new owner's rows.
            self._store_offsets(group, offsets)
            written = self._write_rows()
            self._write_dead_letters()
            self.db.commit()
        except BaseException:
            self.rollback()
            raise
        self._clear()
        return written

    def _stores_offsets(self, offsets: Mapping[TopicPartitionKey, int]) -> bool:
        return False

    def _store_offsets(self, group: str, offsets: Mapping[TopicPartitionKey, int]) -> None:
        """Exactly-once sinks record the positions here."""

    def _write_rows(self) -> list[str]:
        written: list[str] = []
        sql = self._insert_sql()
        for staged in self._rows:
            record = staged.record
            inserted = self.db.execute(
                sql,
                (staged.key, record.topic, record.partition, record.offset,
                 json.dumps(staged.row.value)),
            )  # fmt: skip
            if inserted:
                written.append(staged.key)
                if self.apply is not None:
                    self.apply(self.db, staged.row, record)
        return written

    def _write_dead_letters(self) -> None:
        for record, error in self._dead_letters:
            value = None if record.value is None else record.value.decode("utf-8", "replace")
            self.db.execute(
                f"INSERT INTO {DEAD_LETTER_TABLE} (src_key, src_topic, src_partition, "
                "src_offset, value, error) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (src_key) DO NOTHING",
                (record.source_key, record.topic, record.partition, record.offset, value, error),
            )

    def _clear(self) -> None:
        self._rows.clear()
        self._dead_letters.clear()

    def rollback(self) -> None:
        """Drop everything staged since the last commit."""
        self.db.rollback()
        self._clear()

    def claim(
        self, group: str, partitions: Iterable[TopicPartitionKey]
    ) -> dict[TopicPartitionKey, int]:
        """Take ownership of newly assigned partitions; return the next offsets stored for
        them (exactly-once sinks only; others store none)."""
        return {}

    def release(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Forget the ownership of partitions that left this runner."""

    def stored_offsets(
        self, group: str, partitions: Iterable[TopicPartitionKey]
    ) -> dict[TopicPartitionKey, int]:
        """The next offsets this sink recorded for ``group`` (exactly-once sinks only)."""
        return {}

    def close(self) -> None:
        self.rollback()
        self.db.close()


class IdempotentSink(DatabaseSink):
    """Rows keyed by a unique key; a redelivered record's rows are ignored.

    With at-least-once delivery this applies each input once. Offsets stay in Kafka.
    """

    def _insert_sql(self) -> str:
        return (
            f"INSERT INTO {self.table} (key, src_topic, src_partition, src_offset, value) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING"
        )


class ExactlyOnceSink(DatabaseSink):
    """Rows and the consumer's next offsets committed in one database transaction.

    The runner seeks to the stored offsets on assignment, so Kafka's group offsets are
    informational only. A row key written twice is an integrity error, not ignored:
    that would be a broken guarantee, and it must be loud.

    Zombie fencing: each partition's offsets row carries an owner generation. ``claim``
    (on assignment) bumps it and remembers the new value; ``commit`` updates the row only
    while the generation is still ours. A runner that stalled past its session, lost its
    partitions and then wakes up finds a newer generation and is refused
    (``PartitionsFencedError``) instead of moving the stored offsets backwards.
    """

    exactly_once = True

    def __init__(
        self, db: Database, *, table: str = "onceflow_results", apply: ApplyFn | None = None
    ) -> None:
        super().__init__(db, table=table, apply=apply)
        self._generations: dict[TopicPartitionKey, int] = {}

    def _insert_sql(self) -> str:
        return (
            f"INSERT INTO {self.table} (key, src_topic, src_partition, src_offset, value) "
            "VALUES (?, ?, ?, ?, ?)"
        )

    def claim(
        self, group: str, partitions: Iterable[TopicPartitionKey]
    ) -> dict[TopicPartitionKey, int]:
        wanted = list(partitions)
        if not wanted:
            return {}
        self.db.begin()
        try:
            for topic, partition in wanted:
                self.db.execute(
                    f"INSERT INTO {OFFSETS_TABLE} (grp, topic, part, next_offset, generation) "
                    "VALUES (?, ?, ?, ?, 1) ON CONFLICT (grp, topic, part) "
                    f"DO UPDATE SET generation = {OFFSETS_TABLE}.generation + 1",
                    (group, topic, partition, NO_OFFSET),
                )
            rows = self._offset_rows(group, wanted)
            self.db.commit()
        except BaseException:
            self.db.rollback()
            raise
        stored: dict[TopicPartitionKey, int] = {}
        for tp, (next_offset, generation) in rows.items():
            self._generations[tp] = generation
            if next_offset != NO_OFFSET:
                stored[tp] = next_offset
        log.info("claimed %s for group %s: generations %s", wanted, group, self._generations)
        return stored

    def release(self, partitions: Iterable[TopicPartitionKey]) -> None:
        for tp in partitions:
            self._generations.pop(tp, None)

    def _stores_offsets(self, offsets: Mapping[TopicPartitionKey, int]) -> bool:
        return bool(offsets)

    def _store_offsets(self, group: str, offsets: Mapping[TopicPartitionKey, int]) -> None:
        fenced: list[TopicPartitionKey] = []
        for (topic, partition), next_offset in offsets.items():
            generation = self._generations.get((topic, partition))
            updated = generation is not None and self.db.execute(
                f"UPDATE {OFFSETS_TABLE} SET next_offset = ? "
                "WHERE grp = ? AND topic = ? AND part = ? AND generation = ?",
                (next_offset, group, topic, partition, generation),
            )
            if not updated:
                fenced.append((topic, partition))
        if fenced:
            self.release(fenced)
            raise PartitionsFencedError(fenced)

    def _offset_rows(
        self, group: str, partitions: Iterable[TopicPartitionKey]
    ) -> dict[TopicPartitionKey, tuple[int, int]]:
        wanted = set(partitions)
        rows = self.db.query(
            f"SELECT topic, part, next_offset, generation FROM {OFFSETS_TABLE} WHERE grp = ?",
            (group,),
        )
        return {(t, p): (o, g) for t, p, o, g in rows if (t, p) in wanted}

    def stored_offsets(
        self, group: str, partitions: Iterable[TopicPartitionKey]
    ) -> dict[TopicPartitionKey, int]:
        return {
            tp: offset
            for tp, (offset, _) in self._offset_rows(group, partitions).items()
            if offset != NO_OFFSET
        }
