"""Fixtures shared by the broker and Java tests: one broker process per module, one topic
per test."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from onceflow.testing import BrokerProcess


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A real broker process shared by a module's tests, which must use distinct topics.

    Starting a process per test would dominate the runtime of the client interop tests.
    """
    data_dir = tmp_path_factory.mktemp("shared-broker") / "data"
    broker = BrokerProcess(data_dir).start()
    yield broker
    broker.stop()


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic name unique to the test, legal for Kafka (parametrized ids included)."""
    return re.sub(r"[^a-zA-Z0-9._-]", "-", request.node.name)[:200]
