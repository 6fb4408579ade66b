"""Thin adapters that let one set of SQL statements run on SQLite and PostgreSQL.

Statements use ``?`` placeholders and the ``INSERT ... ON CONFLICT`` syntax that both
databases understand (SQLite 3.24+); each adapter owns one connection and makes
transactions explicit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol


class Database(Protocol):
    """One connection with explicit transactions."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement inside the open transaction; return the affected row count."""
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a query and return every row."""
        ...

    def begin(self) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


class SqliteDatabase:
    """A SQLite file. Transactions are ``BEGIN IMMEDIATE`` so a second writer waits."""

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        # isolation_level=None: the module must not open transactions behind our back.
        self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        # WAL + synchronous=FULL: a committed transaction survives a kill -9 or power loss.
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, tuple(params)).rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, tuple(params)).fetchall()

    def begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        self._conn.close()
