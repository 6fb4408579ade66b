"""Fixtures of the processing tests: a broker process per module and a PostgreSQL server
per session (started from the Debian ``postgresql`` package on a private port)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from onceflow.testing import BrokerProcess
from onceflow.testing.postgres import PostgresNotInstalled, PostgresServer


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A real broker process shared by a module's tests, which use distinct topics."""
    data_dir = tmp_path_factory.mktemp("processing-broker") / "data"
    process = BrokerProcess(data_dir, extra_args=("--default-partitions", "2")).start()
    yield process
    process.stop()


@pytest.fixture
def names(request: pytest.FixtureRequest) -> dict[str, str]:
    """Topic and group names unique to the test."""
    base = re.sub(r"[^a-zA-Z0-9._-]", "-", request.node.name)[:150]
    return {"orders": f"{base}.orders", "payments": f"{base}.payments", "group": f"{base}.g"}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server on a private port and data dir. Fails if PostgreSQL is missing:
    the PostgreSQL sink must be tested, not skipped (.ci/run installs it)."""
    try:
        server = PostgresServer.create()
    except PostgresNotInstalled as exc:
        pytest.fail(str(exc))
    server.start()
    yield server
    server.stop()
