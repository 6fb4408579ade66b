"""PostgreSQL adapter on psycopg 3 (the ``postgres`` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class PostgresDatabase:
    """One psycopg connection; every statement runs inside an explicit transaction."""

    def __init__(self, dsn: str) -> None:
        import psycopg  # imported here so SQLite-only users need not install it

        self.dsn = dsn
        self._conn = psycopg.connect(dsn, autocommit=True)
        self._in_tx = False

    @staticmethod
    def _sql(sql: str) -> str:
        # The shared statements use sqlite's "?" placeholders and contain no literal "?".
        return sql.replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._conn.cursor() as cur:
            cur.execute(self._sql(sql), tuple(params))  # type: ignore[arg-type]
            return cur.rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._conn.cursor() as cur:
            cur.execute(self._sql(sql), tuple(params))  # type: ignore[arg-type]
            return list(cur.fetchall())

    def begin(self) -> None:
        self._conn.execute("BEGIN")
        self._in_tx = True

    def commit(self) -> None:
        self._conn.execute("COMMIT")
        self._in_tx = False

    def rollback(self) -> None:
        if self._in_tx:
            self._conn.execute("ROLLBACK")
            self._in_tx = False

    def close(self) -> None:
        self._conn.close()
