"""pytest plugin (entry point ``pytest11``): a real Kafka-compatible broker per test.

Fixtures:

- ``onceflow_broker``: a broker on a background thread of the test process.
- ``onceflow_broker_process``: a broker as its own OS process (kill it, restart it).
- ``onceflow_broker_process_factory``: call it to start more brokers or pass options,
  e.g. ``factory(flush="never", extra_args=("--segment-bytes", "65536"))``.

Each has ``.bootstrap`` for ``bootstrap.servers`` and keeps its data in ``tmp_path``.

Apache Kafka itself (real JVMs; needs a JDK and Kafka's jars, see ``make kafka``):

- ``onceflow_kafka``: a 1-node KRaft cluster, shared by the session.
- ``onceflow_kafka_cluster``: a 3-node KRaft cluster (RF 3, ``min.insync.replicas=2``),
  shared by the session. Tests may kill, pause or stop its nodes: the next test that
  asks for it gets every node back up and the cluster serving again.
- ``onceflow_kafka_cluster_factory``: call it for a cluster of your own, e.g.
  ``factory(size=3, broker_config={"min.insync.replicas": 1})``.

A missing JDK or missing jars fail the test with one line saying what to install.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from onceflow.broker.config import BrokerConfig, FlushPolicy
from onceflow.broker.server import BrokerThread
from onceflow.testing.broker_process import BrokerProcess
from onceflow.testing.kafka import KafkaCluster, KafkaNotAvailable


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kafka: runs Apache Kafka JVMs (deselect with -m 'not kafka')"
    )
    config.addinivalue_line(
        "markers",
        "java: runs the Java client programs of tests/java (deselect with -m 'not java')",
    )


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


@pytest.fixture(scope="session")
def onceflow_kafka_cluster_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., KafkaCluster]]:
    """Start Apache Kafka clusters; every one is stopped at the end of the session."""
    started: list[KafkaCluster] = []

    def start(size: int = 3, **options: Any) -> KafkaCluster:
        try:
            cluster = KafkaCluster(tmp_path_factory.mktemp(f"kafka-{size}n"), size, **options)
        except KafkaNotAvailable as exc:
            pytest.fail(str(exc), pytrace=False)
        started.append(cluster)
        return cluster.start()

    yield start
    for cluster in started:
        cluster.stop()


@pytest.fixture(scope="session")
def _onceflow_kafka_single(
    onceflow_kafka_cluster_factory: Callable[..., KafkaCluster],
) -> KafkaCluster:
    return onceflow_kafka_cluster_factory(1)


@pytest.fixture(scope="session")
def _onceflow_kafka_three(
    onceflow_kafka_cluster_factory: Callable[..., KafkaCluster],
) -> KafkaCluster:
    return onceflow_kafka_cluster_factory(3)


@pytest.fixture
def onceflow_kafka(_onceflow_kafka_single: KafkaCluster) -> KafkaCluster:
    """A 1-node Apache Kafka (KRaft), every node up when the test starts."""
    _onceflow_kafka_single.heal()
    return _onceflow_kafka_single


@pytest.fixture
def onceflow_kafka_cluster(_onceflow_kafka_three: KafkaCluster) -> KafkaCluster:
    """A 3-node Apache Kafka cluster (KRaft), every node up when the test starts."""
    _onceflow_kafka_three.heal()
    return _onceflow_kafka_three
