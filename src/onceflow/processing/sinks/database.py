"""Thin adapters that let one set of SQL statements run on SQLite and PostgreSQL.

The sinks build their statements with the adapter's ``placeholder`` (``?`` for SQLite,
``%s`` for psycopg) and the ``INSERT ... ON CONFLICT`` syntax both databases understand
(SQLite 3.24+). SQL given to ``execute``/``query`` is run as written: user SQL is never
rewritten. Transactions are explicit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol


class Database(Protocol):
    """One database with explicit transactions."""

    #: The parameter marker of this database's driver: ``?`` or ``%s``.
    placeholder: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement inside the open transaction; return the affected row count."""
        ...

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run a statement once per parameter row inside the open transaction (batched
        where the driver can); return the total affected row count."""
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a query and return every row."""
        ...

    def insert_rows(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        conflict: Sequence[str] | None,
    ) -> list[int]:
        """Insert ``rows`` (quoted ``table`` and ``columns``) in the open transaction;
        with ``conflict`` (quoted key columns) a row whose key exists is skipped. Return
        the indexes of the rows that were inserted, in order."""
        ...

    def begin(self) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


def insert_sql(
    table: str, columns: Sequence[str], conflict: Sequence[str] | None, placeholder: str
) -> str:
    """``INSERT`` of one row; ``ON CONFLICT ... DO NOTHING`` when ``conflict`` is given."""
    marks = ", ".join(placeholder for _ in columns)
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
    return f"{sql} ON CONFLICT ({', '.join(conflict)}) DO NOTHING" if conflict else sql


def insert_one_by_one(
    db: Database,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    conflict: Sequence[str] | None,
) -> list[int]:
    """``Database.insert_rows`` as one statement per row."""
    sql = insert_sql(table, columns, conflict, db.placeholder)
    return [i for i, row in enumerate(rows) if db.execute(sql, row)]


class SqliteDatabase:
    """A SQLite file. Transactions are ``BEGIN IMMEDIATE`` so a second writer waits."""

    placeholder = "?"

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        # isolation_level=None: the module must not open transactions behind our back.
        self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        # WAL + synchronous=FULL: a committed transaction survives a kill -9 or power loss.
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, tuple(params)).rowcount

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        return self._conn.executemany(sql, rows).rowcount if rows else 0

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, tuple(params)).fetchall()

    def insert_rows(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        conflict: Sequence[str] | None,
    ) -> list[int]:
        # In-process: one statement per row costs no round trip.
        return insert_one_by_one(self, table, columns, rows, conflict)

    def begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        self._conn.close()
