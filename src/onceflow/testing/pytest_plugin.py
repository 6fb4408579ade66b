"""pytest plugin (entry point ``pytest11``): a real Kafka-compatible broker per test.

Fixtures:

- ``onceflow_broker``: a broker on a background thread of the test process.
- ``onceflow_broker_process``: a broker as its own OS process (kill it, restart it).
- ``onceflow_broker_process_factory``: call it to start more brokers or pass options,
  e.g. ``factory(flush="never", extra_args=("--segment-bytes", "65536"))``.

Each has ``.bootstrap`` for ``bootstrap.servers`` and keeps its data in ``tmp_path``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from onceflow.broker.config import BrokerConfig, FlushPolicy
from onceflow.broker.server import BrokerThread
from onceflow.testing.broker_process import BrokerProcess


@pytest.fixture
def onceflow_broker(tmp_path: Path) -> Iterator[BrokerThread]:
    """An in-process broker on an ephemeral port, stopped after the test."""
    config = BrokerConfig(data_dir=tmp_path / "broker-data", port=0, flush=FlushPolicy.ALWAYS)
    with BrokerThread(config) as running:
        yield running


@pytest.fixture
def onceflow_broker_process_factory(
    tmp_path: Path,
) -> Iterator[Callable[..., BrokerProcess]]:
    started: list[BrokerProcess] = []

    def start(**options: Any) -> BrokerProcess:
        data_dir = options.pop("data_dir", tmp_path / f"broker-data-{len(started)}")
        broker = BrokerProcess(data_dir, **options)
        started.append(broker)
        return broker.start()

    yield start
    for broker in started:
        broker.stop()


@pytest.fixture
def onceflow_broker_process(
    onceflow_broker_process_factory: Callable[..., BrokerProcess],
) -> BrokerProcess:
    """A broker as a separate process on an ephemeral port."""
    return onceflow_broker_process_factory()
