"""PostgreSQL adapter on psycopg 3 (the ``postgres`` extra).

``PostgresDatabase`` takes a conninfo string (it opens and owns one connection), a
psycopg ``Connection`` the application already has (used as it is, never closed here),
or a ``psycopg_pool.ConnectionPool`` (a connection is borrowed for each transaction and
returned at its end). An SQLAlchemy engine's raw connection works as a connection:
``PostgresDatabase(engine.raw_connection().driver_connection)``.

A commit's rows are written in one round trip, however many there are: one
``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING`` with a column per array
parameter, which also reports which rows were new.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from onceflow.processing.sinks.database import insert_one_by_one

#: The batch's extra column: each row's position (from 1) in the batch.
_ROW = '"onceflow_row"'


def _column_arrays(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """The batch as one list per column: each becomes one array parameter."""
    return [list(column) for column in zip(*rows, strict=True)]


def _params(params: Sequence[Any]) -> tuple[Any, ...] | None:
    """None without parameters: psycopg then leaves the SQL alone, so a literal ``%``
    or ``?`` in a statement that takes no parameters needs no escaping."""
    return tuple(params) if params else None


class PostgresDatabase:
    """PostgreSQL through psycopg 3; transactions are explicit ``begin``/``commit``."""

    placeholder = "%s"

    def __init__(self, source: Any) -> None:
        import psycopg  # imported here so SQLite-only users need not install it

        self._psycopg = psycopg
        self._pool: Any = None
        self._owned = isinstance(source, str)
        if self._owned:
            self.dsn: str | None = source
            self._conn: Any = psycopg.connect(source, autocommit=True)
        elif isinstance(source, psycopg.Connection):
            self.dsn, self._conn = None, source
        elif callable(getattr(source, "connection", None)):
            self.dsn, self._conn, self._pool = None, None, source
        else:
            raise TypeError(
                "PostgresDatabase takes a conninfo string, a psycopg Connection or a "
                f"psycopg_pool ConnectionPool, not {type(source).__name__}"
            )
        self._types: dict[tuple[str, tuple[str, ...]], tuple[str, ...] | None] = {}
        self._lease: AbstractContextManager[Any] | None = None
        self._tx: AbstractContextManager[Any] | None = None

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """The connection of the open transaction or, outside one, a connection for
        one statement inside its own transaction (the caller's connection may not be
        in autocommit mode, and a pool's connections are only borrowed)."""
        if self._tx is not None:
            yield self._conn
            return
        if self._pool is not None:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
            return
        with self._conn.transaction():
            yield self._conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._connection() as conn, conn.cursor() as cur:
            cur.execute(sql, _params(params))
            return int(cur.rowcount)

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        # psycopg pipelines executemany: one round trip, not one per row.
        with self._connection() as conn, conn.cursor() as cur:
            cur.executemany(sql, rows)
            return int(cur.rowcount)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._connection() as conn, conn.cursor() as cur:
            cur.execute(sql, _params(params))
            return list(cur.fetchall())

    def insert_rows(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        conflict: Sequence[str] | None,
    ) -> list[int]:
        types = self._array_types(table, columns)
        if types is None:  # an array column: unnest would flatten it, go row by row
            return insert_one_by_one(self, table, columns, rows, conflict)
        cols = ", ".join(columns)
        arrays = _column_arrays(rows)
        # One statement whatever the batch size: each column is one array parameter.
        source = (
            f"(SELECT * FROM unnest({', '.join(f'%b::{t}[]' for t in types)}) "
            f"WITH ORDINALITY AS s({cols}, {_ROW}))"
        )
        select = f"SELECT {cols} FROM src ORDER BY {_ROW}"
        insert = f"WITH src AS {source} INSERT INTO {table} ({cols}) {select}"
        if not conflict:
            self.execute(insert, arrays)
            return list(range(len(rows)))
        fresh = self._insert_if_all_new(columns, rows, conflict, insert, arrays)
        if fresh is not None:
            return fresh
        # Which rows went in: the first of each new key, by its position in the batch.
        keys = ", ".join(conflict)
        joined = " AND ".join(f"src.{k} = ins.{k}" for k in conflict)
        found = self.query(
            f"WITH src AS {source}, ins AS (INSERT INTO {table} ({cols}) {select} "
            f"ON CONFLICT ({keys}) DO NOTHING RETURNING {keys}) "
            f"SELECT min(src.{_ROW}) FROM src JOIN ins ON {joined} "
            f"GROUP BY {', '.join(f'ins.{k}' for k in conflict)} ORDER BY 1",
            arrays,
        )
        return [int(position) - 1 for (position,) in found]

    def _insert_if_all_new(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        conflict: Sequence[str],
        insert: str,
        arrays: list[list[Any]],
    ) -> list[int] | None:
        """The common case, a batch of keys the table has not seen, as a plain INSERT of
        each key's first row: no conflict arbiter and no join back to find the new rows,
        about a third cheaper. A key that does exist (a redelivery, or another writer's
        row, however the column compares) fails the insert with a unique violation; it
        is undone to its savepoint and None tells the caller to take the careful path."""
        at = [columns.index(k) for k in conflict]
        first: dict[tuple[Any, ...], int] = {}
        try:
            for i, row in enumerate(rows):
                first.setdefault(tuple(row[j] for j in at), i)
        except TypeError:  # an unhashable key value (a JSON document, say)
            return None
        keep = list(first.values())
        if len(keep) < len(rows):  # a key repeated in the batch: insert its first row only
            arrays = _column_arrays([rows[i] for i in keep])
        try:
            with self._connection() as conn, conn.transaction(), conn.cursor() as cur:
                cur.execute(insert, arrays)  # inside a savepoint of its own
        except self._psycopg.errors.UniqueViolation:
            return None
        return keep

    def _array_types(self, table: str, columns: Sequence[str]) -> tuple[str, ...] | None:
        """The SQL types of ``columns`` (quoted names) of ``table``, looked up once; None
        when one of them is itself an array."""
        cache_key = (table, tuple(columns))
        if cache_key not in self._types:
            found = dict(
                self.query(
                    "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                    (table,),
                )
            )
            types = []
            for column in columns:
                name = column.strip('"')
                if name not in found:
                    raise ValueError(f"table {table} has no column {name!r}")
                types.append(found[name])
            arrays = any(t.endswith("]") for t in types)
            self._types[cache_key] = None if arrays else tuple(types)
        return self._types[cache_key]

    def begin(self) -> None:
        if self._pool is not None:
            self._lease = self._pool.connection()
            self._conn = self._lease.__enter__()
        self._tx = self._conn.transaction()
        self._tx.__enter__()

    def commit(self) -> None:
        self._end(None)

    def rollback(self) -> None:
        if self._tx is not None:
            self._end(self._psycopg.Rollback())

    def _end(self, rollback: BaseException | None) -> None:
        tx, lease = self._tx, self._lease
        self._tx = self._lease = None
        try:
            if tx is not None:
                kind = None if rollback is None else type(rollback)
                tx.__exit__(kind, rollback, None)
        finally:
            if lease is not None:
                self._conn = None
                lease.__exit__(None, None, None)

    def close(self) -> None:
        self.rollback()
        if self._owned:
            self._conn.close()
