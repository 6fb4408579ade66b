"""Database sinks: idempotent (unique key) and exactly-once (offsets in the same transaction).

Both write each ``Row`` into a results table whose primary key is the row's business key
or, by default, the source record's (topic, partition, offset). ``apply`` lets the user
turn a newly written row into further effects (e.g. a balance update) inside the same
database transaction, so an effect happens exactly when its row is first written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar

from onceflow.processing.records import Record, Row
from onceflow.processing.sinks.database import Database

TopicPartitionKey = tuple[str, int]
ApplyFn = Callable[[Database, Row, Record], None]

OFFSETS_TABLE = "onceflow_offsets"
DEAD_LETTER_TABLE = "onceflow_dead_letters"


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
        self._open = False

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
            "PRIMARY KEY (grp, topic, part))"
        )
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {DEAD_LETTER_TABLE} (src_key TEXT PRIMARY KEY, "
            "src_topic TEXT NOT NULL, src_partition INTEGER NOT NULL, "
            "src_offset BIGINT NOT NULL, value TEXT, error TEXT NOT NULL)"
        )
        self.db.commit()

    def _ensure_open(self) -> None:
        if not self._open:
            self.db.begin()
            self._open = True

    def _insert_sql(self) -> str:
        raise NotImplementedError

    def write(self, record: Record, index: int, row: Row) -> bool:
        """Write one row in the open transaction; True if it was new (and applied)."""
        self._ensure_open()
        key = row.key if row.key is not None else f"{record.source_key}/{index}"
        inserted = self.db.execute(
            self._insert_sql(),
            (key, record.topic, record.partition, record.offset, json.dumps(row.value)),
        )
        if inserted and self.apply is not None:
            self.apply(self.db, row, record)
        return bool(inserted)

    def write_dead_letter(self, record: Record, error: str) -> None:
        """Keep a poison record and its error in the open transaction."""
        self._ensure_open()
        value = None if record.value is None else record.value.decode("utf-8", "replace")
        self.db.execute(
            f"INSERT INTO {DEAD_LETTER_TABLE} (src_key, src_topic, src_partition, src_offset, "
            "value, error) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (src_key) DO NOTHING",
            (record.source_key, record.topic, record.partition, record.offset, value, error),
        )

    def commit(self, group: str, offsets: Mapping[TopicPartitionKey, int]) -> None:
        """Commit the open transaction (a no-op if nothing was written)."""
        if self._open:
            self.db.commit()
            self._open = False

    def rollback(self) -> None:
        """Drop everything written since the last commit."""
        self.db.rollback()
        self._open = False

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
    """

    exactly_once = True

    def _insert_sql(self) -> str:
        return (
            f"INSERT INTO {self.table} (key, src_topic, src_partition, src_offset, value) "
            "VALUES (?, ?, ?, ?, ?)"
        )

    def commit(self, group: str, offsets: Mapping[TopicPartitionKey, int]) -> None:
        self._ensure_open()
        for (topic, partition), next_offset in offsets.items():
            self.db.execute(
                f"INSERT INTO {OFFSETS_TABLE} (grp, topic, part, next_offset) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (grp, topic, part) "
                "DO UPDATE SET next_offset = excluded.next_offset",
                (group, topic, partition, next_offset),
            )
        super().commit(group, offsets)

    def stored_offsets(
        self, group: str, partitions: Iterable[TopicPartitionKey]
    ) -> dict[TopicPartitionKey, int]:
        wanted = set(partitions)
        rows = self.db.query(
            f"SELECT topic, part, next_offset FROM {OFFSETS_TABLE} WHERE grp = ?", (group,)
        )
        return {(t, p): o for t, p, o in rows if (t, p) in wanted}
