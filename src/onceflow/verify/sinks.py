"""The databases a matrix's exactly-once-sink runs write to: a SQLite file in the
run's directory, or a fresh database on one PostgreSQL server started for the whole
invocation (only when a cell needs it)."""

from __future__ import annotations

import threading
from types import TracebackType

from onceflow.testing.postgres import PostgresServer


class SinkDatabases:
    """``url(sink)``: where a run with ``sink`` keeps its database (None: SQLite in its
    own directory). Raises ``PostgresNotInstalled`` when PostgreSQL is missing."""

    def __init__(self) -> None:
        self._server: PostgresServer | None = None
        self._lock = threading.Lock()  # cells run on parallel threads

    def url(self, sink: str | None) -> str | None:
        if sink != "postgresql":
            return None
        with self._lock:
            if self._server is None:
                self._server = PostgresServer.create().start()
            return self._server.new_database()

    def __enter__(self) -> SinkDatabases:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._server is not None:
            self._server.stop()
