"""Database sinks: idempotent (unique key) and exactly-once (offsets in the same transaction).

Rows go into a table of the user's (``table=``, ``key=`` its unique key columns; each
``Row``'s value is a mapping or dataclass whose fields are the columns) or, by default,
a generic results table keyed by the row's business key or the source record's
(topic, partition, offset). ``apply`` lets the user turn a newly written row into
further effects (e.g. a balance update) inside the same database transaction, so an
effect happens exactly when its row is first written; ``apply_many`` does the same for
all of a commit's new rows at once (one statement per batch instead of per row).

Rows are staged in memory as the runner processes records and written at ``commit``, in
one short database transaction: no lock is held between commits, so a runner that
stalls (a zombie) blocks nobody, and the writes of one commit are batched.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from onceflow.processing.errors import PartitionsFencedError
from onceflow.processing.records import Record, Row
from onceflow.processing.sinks.database import Database
from onceflow.processing.sinks.sql import checked_type, quote_name, quote_table

log = logging.getLogger(__name__)

TopicPartitionKey = tuple[str, int]
ApplyFn = Callable[[Database, Row, Record], None]
ApplyManyFn = Callable[[Database, list[tuple[Row, Record]]], None]

RESULTS_TABLE = "onceflow_results"
OFFSETS_TABLE = "onceflow_offsets"
DEAD_LETTER_TABLE = "onceflow_dead_letters"
#: ``next_offset`` of a partition that was claimed but has no committed position yet.
NO_OFFSET = -1
_GENERIC_COLUMNS = ("key", "src_topic", "src_partition", "src_offset", "value")


@dataclass(frozen=True)
class _Staged:
    """One row waiting for the next commit: its columns (quoted) and their values."""

    record: Record
    row: Row
    key: str
    columns: tuple[str, ...]
    values: tuple[Any, ...]


def _fields(value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    raise TypeError(
        f"a Row for a table with key columns needs a mapping or dataclass value, got {value!r}"
    )


class DatabaseSink:
    """Shared machinery of the two sinks; use ``IdempotentSink`` or ``ExactlyOnceSink``.

    ``table`` and ``key`` name the user's table and its unique key columns; without
    ``key`` the generic results table is used. ``columns`` (column -> SQL type) asks
    the sink to create the user's table if it does not exist. Names are validated and
    quoted (so they match case-sensitively); values are always parameters.
    """

    exactly_once: ClassVar[bool] = False

    def __init__(
        self,
        db: Database,
        *,
        table: str = RESULTS_TABLE,
        key: Sequence[str] | str | None = None,
        columns: Mapping[str, str] | None = None,
        apply: ApplyFn | None = None,
        apply_many: ApplyManyFn | None = None,
    ) -> None:
        if apply is not None and apply_many is not None:
            raise ValueError("give apply (per row) or apply_many (per commit), not both")
        self.db = db
        self.table = table
        self._table = quote_table(table)
        self.key = (key,) if isinstance(key, str) else tuple(key or ())
        if key is not None and not self.key:
            raise ValueError("key must name at least one column")
        self._key_sql = tuple(quote_name(k) for k in self.key)
        if columns is not None and not self.key:
            raise ValueError("columns= describes a table of yours: give its key= too")
        missing = [k for k in self.key if columns is not None and k not in columns]
        if missing:
            raise ValueError(f"key column(s) {', '.join(missing)} missing from columns=")
        self.columns = {quote_name(c): checked_type(t) for c, t in (columns or {}).items()}
        self.apply = apply
        self.apply_many = apply_many
        self._rows: list[_Staged] = []
        self._dead_letters: list[tuple[Record, str]] = []
        self._quoted: dict[tuple[str, ...], tuple[str, ...]] = {}

    def setup(self) -> None:
        """Create the sink's tables if they do not exist (a table of the user's only
        when ``columns`` describes it)."""
        self.db.begin()
        if not self.key:
            self.db.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} (key TEXT PRIMARY KEY, "
                "src_topic TEXT NOT NULL, src_partition INTEGER NOT NULL, "
                "src_offset BIGINT NOT NULL, value TEXT)"
            )
        elif self.columns:
            defs = ", ".join(f"{name} {sql_type}" for name, sql_type in self.columns.items())
            self.db.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} ({defs}, "
                f"PRIMARY KEY ({', '.join(self._key_sql)}))"
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

    def _marks(self, count: int) -> str:
        return ", ".join(self.db.placeholder for _ in range(count))

    def _conflict(self) -> tuple[str, ...] | None:
        """The unique key whose existing rows an insert skips (None: insert must fail)."""
        raise NotImplementedError

    def write(self, record: Record, index: int, row: Row) -> None:
        """Stage one row for the next commit."""
        if not self.key:
            key = row.key if row.key is not None else f"{record.source_key}/{index}"
            values = (key, record.topic, record.partition, record.offset, json.dumps(row.value))
            self._rows.append(_Staged(record, row, key, self._names(_GENERIC_COLUMNS), values))
            return
        fields = _fields(row.value)
        missing = [k for k in self.key if k not in fields]
        if missing:
            raise ValueError(f"row for {self.table} lacks key column(s) {', '.join(missing)}")
        key = "/".join(str(fields[k]) for k in self.key)
        names = tuple(fields)
        self._rows.append(_Staged(record, row, key, self._names(names), tuple(fields.values())))

    def _names(self, names: tuple[str, ...]) -> tuple[str, ...]:
        quoted = self._quoted.get(names)
        if quoted is None:
            quoted = self._quoted[names] = tuple(quote_name(n) for n in names)
        return quoted

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
        new: list[_Staged] = []
        start = 0
        while start < len(self._rows):
            # A run of rows with the same columns is one batch insert.
            columns, end = self._rows[start].columns, start + 1
            while end < len(self._rows) and self._rows[end].columns == columns:
                end += 1
            run = self._rows[start:end]
            inserted = self.db.insert_rows(
                self._table, columns, [s.values for s in run], self._conflict()
            )
            new += [run[i] for i in inserted]
            start = end
        if self.apply is not None:
            for staged in new:
                self.apply(self.db, staged.row, staged.record)
        elif self.apply_many is not None and new:
            self.apply_many(self.db, [(s.row, s.record) for s in new])
        return [s.key for s in new]

    def _write_dead_letters(self) -> None:
        for record, error in self._dead_letters:
            value = None if record.value is None else record.value.decode("utf-8", "replace")
            self.db.execute(
                f"INSERT INTO {DEAD_LETTER_TABLE} (src_key, src_topic, src_partition, "
                f"src_offset, value, error) VALUES ({self._marks(6)}) "
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

    def _conflict(self) -> tuple[str, ...] | None:
        return self._key_sql or ('"key"',)


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

    def __init__(self, db: Database, **options: Any) -> None:
        super().__init__(db, **options)
        self._generations: dict[TopicPartitionKey, int] = {}

    def _conflict(self) -> tuple[str, ...] | None:
        return None

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
                    f"VALUES ({self._marks(4)}, 1) ON CONFLICT (grp, topic, part) "
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
        p = self.db.placeholder
        ours = {tp: self._generations.get(tp) for tp in offsets}
        updated = self.db.execute_many(
            f"UPDATE {OFFSETS_TABLE} SET next_offset = {p} "
            f"WHERE grp = {p} AND topic = {p} AND part = {p} AND generation = {p}",
            [
                (offset, group, topic, partition, ours[(topic, partition)])
                for (topic, partition), offset in offsets.items()
                if ours[(topic, partition)] is not None
            ],
        )
        if updated == len(offsets):
            return
        # Generations only grow: a partition whose generation is not ours now was not
        # ours at the update either.
        now = self._offset_rows(group, offsets)
        fenced = [tp for tp, mine in ours.items() if mine is None or now.get(tp, (0, 0))[1] != mine]
        self.release(fenced)
        raise PartitionsFencedError(fenced or list(offsets))

    def _offset_rows(
        self, group: str, partitions: Iterable[TopicPartitionKey]
    ) -> dict[TopicPartitionKey, tuple[int, int]]:
        wanted = set(partitions)
        rows = self.db.query(
            f"SELECT topic, part, next_offset, generation FROM {OFFSETS_TABLE} "
            f"WHERE grp = {self.db.placeholder}",
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
