"""The database sinks on a real SQLite file and a real PostgreSQL server, without Kafka:
rows in the user's own tables, names validated, values as parameters, user SQL left as
written, batches of any size, and the connections applications already have."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import sqlalchemy
from psycopg_pool import ConnectionPool

from onceflow.processing import (
    Database,
    ExactlyOnceSink,
    IdempotentSink,
    PostgresDatabase,
    Record,
    Row,
    SqliteDatabase,
)
from onceflow.testing.postgres import PostgresServer

PAYMENTS = "CREATE TABLE payments (order_id TEXT PRIMARY KEY, customer TEXT, amount BIGINT)"


def record(offset: int) -> Record:
    return Record("orders", 0, offset, None, b"{}")


def payment(order: str, amount: int = 10, customer: str = "c1") -> Row:
    return Row({"order_id": order, "customer": customer, "amount": amount})


@pytest.fixture(params=["sqlite", "postgresql"])
def db(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_server: PostgresServer
) -> Iterator[Database]:
    database: Database = (
        SqliteDatabase(tmp_path / "sink.db")
        if request.param == "sqlite"
        else PostgresDatabase(postgres_server.new_database())
    )
    yield database
    database.close()


def create(db: Database, sql: str) -> None:
    db.begin()
    db.execute(sql)
    db.commit()


def rows_of(db: Database, sql: str) -> list[tuple[object, ...]]:
    return sorted(db.query(sql))


@pytest.mark.parametrize("count", [3, 40], ids=["row-by-row", "batch"])
def test_idempotent_sink_writes_the_users_table_and_applies_each_key_once(
    db: Database, count: int
) -> None:
    create(db, PAYMENTS)
    applied: list[str] = []
    sink = IdempotentSink(
        db, table="payments", key=("order_id",),
        apply=lambda _db, row, _rec: applied.append(row.value["order_id"]),
    )  # fmt: skip
    sink.setup()
    for i in range(count):
        sink.write(record(i), 0, payment(f"o{i}", amount=i))
    sink.write(record(count), 0, payment("o0", amount=999))  # same key in the same commit
    assert sink.commit("g", {("orders", 0): count + 1}) == [f"o{i}" for i in range(count)]
    # Redelivered: the rows exist, nothing is applied again; a new key still is.
    sink.write(record(1), 0, payment("o1", amount=1))
    sink.write(record(count + 1), 0, payment("new", amount=5))
    assert sink.commit("g", {("orders", 0): count + 2}) == ["new"]
    assert applied == [*(f"o{i}" for i in range(count)), "new"]
    got = rows_of(db, "SELECT order_id, amount FROM payments")
    assert got == sorted([*((f"o{i}", i) for i in range(count)), ("new", 5)])


@dataclass(frozen=True)
class Charge:
    order_id: str
    amount: int


def test_exactly_once_sink_creates_the_users_table_and_refuses_a_duplicate(
    db: Database,
) -> None:
    sink = ExactlyOnceSink(
        db, table="charges", key="order_id", columns={"order_id": "TEXT", "amount": "BIGINT"}
    )
    sink.setup()
    sink.claim("g", [("orders", 0)])
    for i in range(20):
        sink.write(record(i), 0, Row(Charge(f"o{i}", i)))
    assert len(sink.commit("g", {("orders", 0): 20})) == 20
    sink.write(record(20), 0, Row(Charge("o3", 3)))
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        sink.commit("g", {("orders", 0): 21})
    assert len(db.query("SELECT order_id FROM charges")) == 20
    assert sink.stored_offsets("g", [("orders", 0)]) == {("orders", 0): 20}


def test_exactly_once_sink_refuses_a_commit_after_another_claim(db: Database) -> None:
    zombie, owner = ExactlyOnceSink(db), ExactlyOnceSink(db)
    zombie.setup()
    zombie.claim("g", [("orders", 0)])
    owner.claim("g", [("orders", 0)])
    owner.write(record(0), 0, Row("mine"))
    owner.commit("g", {("orders", 0): 7})
    zombie.write(record(0), 0, Row("stale"))
    with pytest.raises(Exception, match=r"another runner owns orders\[0\]"):
        zombie.commit("g", {("orders", 0): 1})
    assert owner.stored_offsets("g", [("orders", 0)]) == {("orders", 0): 7}
    assert db.query("SELECT value FROM onceflow_results") == [('"mine"',)]


@pytest.mark.parametrize(
    "options",
    [
        {"table": "payments; DROP TABLE payments", "key": ("order_id",)},
        {"table": "a.b.c", "key": ("order_id",)},
        {"table": "payments", "key": ('order_id"',)},
        {"table": "payments", "key": ()},
        {"table": "t", "key": ("k",), "columns": {"k": "TEXT); DROP TABLE t; --"}},
        {"table": "t", "key": ("k",), "columns": {"other": "TEXT"}},
        {"table": "t", "columns": {"k": "TEXT"}},
    ],
)
def test_bad_names_are_refused(tmp_path: Path, options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"name|key|columns|type"):
        IdempotentSink(SqliteDatabase(tmp_path / "x.db"), **options)  # type: ignore[arg-type]


def test_a_row_without_its_key_column_is_refused(tmp_path: Path) -> None:
    sink = IdempotentSink(SqliteDatabase(tmp_path / "x.db"), table="payments", key="order_id")
    with pytest.raises(ValueError, match="lacks key column"):
        sink.write(record(0), 0, Row({"amount": 1}))
    with pytest.raises(TypeError, match="mapping or dataclass"):
        sink.write(record(0), 0, Row(5))
    with pytest.raises(ValueError, match="plain SQL identifier"):
        sink.write(record(0), 0, Row({"order_id": "o", "bad name": 1}))


def test_values_are_parameters_and_user_sql_is_not_rewritten(db: Database) -> None:
    create(db, PAYMENTS)
    create(db, "CREATE TABLE notes (note TEXT)")
    hostile = "'); DROP TABLE payments; -- ? %s %"
    p = db.placeholder

    def note(database: Database, row: Row, _record: Record) -> None:
        # Literal ? and % in SQL without parameters, and in parameter values.
        database.execute("INSERT INTO notes (note) VALUES ('why? 100%')")
        database.execute(f"INSERT INTO notes (note) VALUES ({p})", (row.value["customer"],))

    sink = IdempotentSink(db, table="payments", key=("order_id",), apply=note)
    sink.write(record(0), 0, payment("o?%", customer=hostile))
    assert sink.commit("g", {}) == ["o?%"]
    assert db.query("SELECT order_id, customer FROM payments") == [("o?%", hostile)]
    assert rows_of(db, "SELECT note FROM notes") == sorted([(hostile,), ("why? 100%",)])


def test_postgres_keys_equal_in_the_database_though_not_in_python(
    postgres_server: PostgresServer,
) -> None:
    # CHAR(n) ignores trailing blanks: "ab" and "ab  " are one key to PostgreSQL. A batch
    # of keys that look new to Python still skips the row whose key the table holds.
    db = PostgresDatabase(postgres_server.new_database())
    create(db, "CREATE TABLE codes (code CHAR(4) PRIMARY KEY, n BIGINT)")
    sink = IdempotentSink(db, table="codes", key="code")
    for i, code in enumerate(["ab", "cd", "ab  ", "ef"]):
        sink.write(record(i), 0, Row({"code": code, "n": i}))
    assert sink.commit("g", {}) == ["ab", "cd", "ef"]
    sink.write(record(4), 0, Row({"code": "cd ", "n": 4}))
    sink.write(record(5), 0, Row({"code": "gh", "n": 5}))
    assert sink.commit("g", {}) == ["gh"]
    assert rows_of(db, "SELECT rtrim(code), n FROM codes") == [
        ("ab", 0),
        ("cd", 1),
        ("ef", 3),
        ("gh", 5),
    ]
    db.close()


def _own_connection(server: PostgresServer) -> Callable[[], tuple[PostgresDatabase, object]]:
    def make() -> tuple[PostgresDatabase, object]:
        conn = psycopg.connect(server.new_database())  # not autocommit: the app's choice
        return PostgresDatabase(conn), conn

    return make


def _pool(server: PostgresServer) -> Callable[[], tuple[PostgresDatabase, object]]:
    def make() -> tuple[PostgresDatabase, object]:
        pool = ConnectionPool(server.new_database(), min_size=1, max_size=2, open=True)
        return PostgresDatabase(pool), pool

    return make


def _sqlalchemy(server: PostgresServer) -> Callable[[], tuple[PostgresDatabase, object]]:
    def make() -> tuple[PostgresDatabase, object]:
        dsn = server.new_database()
        engine = sqlalchemy.create_engine(
            "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn)
        )
        raw = engine.raw_connection()  # the engine's pool lends it; close() gives it back
        return PostgresDatabase(raw.driver_connection), raw

    return make


@pytest.mark.parametrize(
    "source", [_own_connection, _pool, _sqlalchemy], ids=["connection", "pool", "sqlalchemy"]
)
def test_postgres_database_on_the_applications_connection_or_pool(
    postgres_server: PostgresServer,
    source: Callable[[PostgresServer], Callable[[], tuple[PostgresDatabase, object]]],
) -> None:
    db, handle = source(postgres_server)()
    try:
        sink = ExactlyOnceSink(db, table="payments", key="order_id",
                               columns={"order_id": "TEXT", "amount": "BIGINT"})  # fmt: skip
        sink.setup()
        sink.claim("g", [("orders", 0)])
        for i in range(12):
            sink.write(record(i), 0, Row({"order_id": f"o{i}", "amount": i}))
        assert len(sink.commit("g", {("orders", 0): 12})) == 12
        sink.write(record(12), 0, Row({"order_id": "o12", "amount": 12}))
        sink.rollback()
        assert sink.stored_offsets("g", [("orders", 0)]) == {("orders", 0): 12}
        assert len(db.query("SELECT order_id FROM payments")) == 12
        db.close()
        # The application's connection or pool outlives the sink and sees the commit.
        if isinstance(handle, ConnectionPool):
            with handle.connection() as conn:
                count = conn.execute("SELECT count(*) FROM payments").fetchone()
        elif isinstance(handle, sqlalchemy.PoolProxiedConnection):
            # The engine's own DB-API cursor on the connection the sink was given.
            cursor = handle.cursor()
            cursor.execute("SELECT count(*) FROM payments")
            count = cursor.fetchone()
        else:
            assert isinstance(handle, psycopg.Connection) and not handle.closed
            count = handle.execute("SELECT count(*) FROM payments").fetchone()
        assert count == (12,)
    finally:
        handle.close()  # type: ignore[attr-defined]
