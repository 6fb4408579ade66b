"""The brokers the benchmarks compare, started the same way for each benchmark.

* ``onceflow_target(flush)``: ``onceflow broker`` as its own process on a fresh data
  dir (removed afterwards), with its Prometheus metrics on a port of its own;
* ``kafka_target()``: a single-node Apache Kafka (KRaft, one JVM, its shipped 1 GiB heap,
  no fsync: durability left to replicas it does not have; needs ``make kafka``);
* ``mock_target()``: librdkafka's in-memory mock cluster, in this process. It keeps only
  the last ~5 MB (100,000 batches) of each partition and has no CreateTopics (its topics
  are made through its C API), and there is no broker process whose CPU could be read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from onceflow.kafka_admin import create_topics
from onceflow.testing.broker_process import BrokerProcess
from onceflow.testing.kafka import free_port, temporary_cluster
from onceflow.testing.metrics import scrape, total
from onceflow.testing.mock_cluster import mock_cluster

SETUP_TIMEOUT = 30.0


@dataclasses.dataclass(frozen=True)
class Target:
    """A running broker: where clients connect, how to make a topic on it, and the
    process whose CPU time is the broker's (None when it runs inside this process)."""

    bootstrap: str
    create_topic: Callable[[str, int], None]
    pid: int | None
    #: Where the broker's Prometheus metrics are (onceflow only).
    metrics_port: int | None = None

    def cpu_seconds(self) -> float | None:
        """The broker process's user + system CPU seconds so far, or None."""
        return None if self.pid is None else cpu_seconds(self.pid)

    def answering_seconds(self) -> float | None:
        """Seconds the broker has spent answering requests so far, from receipt to
        answer, Fetch left out (a fetch's time is mostly its long-poll wait); None
        without metrics. For one client whose requests go one after another this is
        the part of its time that it waited for the broker."""
        if self.metrics_port is None:
            return None
        samples = scrape(self.metrics_port)
        name = "onceflow_broker_request_seconds_sum"
        return total(samples, name) - total(samples, name, api="Fetch")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) may hold spaces: count fields after its ")".
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _created_through_admin(bootstrap: str) -> Callable[[str, int], None]:
    def create(name: str, partitions: int) -> None:
        create_topics(bootstrap, name, partitions=partitions, timeout=SETUP_TIMEOUT)

    return create


@contextlib.contextmanager
def onceflow_target(flush: str = "always") -> Iterator[Target]:
    """``onceflow broker --flush FLUSH`` as its own process on a fresh data dir."""
    port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="onceflow-bench-") as tmp,
        BrokerProcess(
            Path(tmp) / "data", flush=flush, extra_args=("--metrics-port", str(port))
        ) as broker,
    ):
        yield Target(broker.bootstrap, _created_through_admin(broker.bootstrap), broker.pid, port)


@contextlib.contextmanager
def kafka_target() -> Iterator[Target]:
    """A single-node Apache Kafka as shipped: 1 GiB heap, no fsync."""
    with temporary_cluster(1, heap_mb=1024) as kafka:
        yield Target(kafka.bootstrap, _created_through_admin(kafka.bootstrap), kafka.nodes[0].pid)


@contextlib.contextmanager
def mock_target() -> Iterator[Target]:
    """librdkafka's in-memory mock cluster with one broker."""
    with mock_cluster() as mock:
        yield Target(mock.bootstrap, mock.create_topic, None)
