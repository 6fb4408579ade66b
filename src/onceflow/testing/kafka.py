"""Apache Kafka itself, as real JVM processes on 127.0.0.1, for tests and benchmarks.

A :class:`KafkaCluster` is one or more combined broker+controller KRaft nodes. Each node
is a real ``kafka.Kafka`` JVM that a test can SIGKILL, SIGSTOP/SIGCONT, stop cleanly
and restart on the same data and ports. Start-up waits on real conditions (every node
registered, the internal topics led and fully replicated), bounded by a deadline; a
failed start raises with the node's log tail.

The jars come from Maven Central (``make kafka`` copies Apache Kafka's server jars and a
log4j2 backend into ``.kafka/libs``); point ``ONCEFLOW_KAFKA_LIBS`` at any directory of
those jars to use them elsewhere. ``java`` is taken from ``JAVA_HOME`` or ``PATH``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onceflow.admin.wire import ConnectionClosed, KafkaConnection, request_module
from onceflow.broker.protocol import build

LIBS_ENV = "ONCEFLOW_KAFKA_LIBS"
START_TIMEOUT = 120.0
INTERNAL_TOPICS = ("__consumer_offsets", "__transaction_state")
# Metadata v12 and FindCoordinator v4 are served by every Kafka 4.x broker.
_METADATA_VERSION = 12
_FIND_COORDINATOR_VERSION = 4
_GROUP_KEY, _TRANSACTION_KEY = 0, 1

_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="out" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="org.apache.kafka.clients.NetworkClient" level="WARN"/>
    <Root level="INFO"><AppenderRef ref="out"/></Root>
  </Loggers>
</Configuration>
"""


class KafkaNotAvailable(Exception):
    """No JDK or no Kafka jars: the message says what to install or run."""


class KafkaStartError(Exception):
    """A node did not come up in time; the message carries its log tail."""


def kafka_libs() -> Path:
    """The directory of Apache Kafka's jars: ``$ONCEFLOW_KAFKA_LIBS``, else the nearest
    ``.kafka/libs`` in the working directory or one of its parents."""
    configured = os.environ.get(LIBS_ENV)
    candidates = (
        [Path(configured)]
        if configured
        else [d / ".kafka" / "libs" for d in (Path.cwd(), *Path.cwd().parents)]
    )
    for libs in candidates:
        if any(libs.glob("kafka_2.13-*.jar")):
            return libs
    where = configured or ".kafka/libs"
    raise KafkaNotAvailable(
        f"Apache Kafka's jars are not in {where}: run `make kafka` (Maven copies them from "
        f"Maven Central) or set {LIBS_ENV} to a directory holding them"
    )


def java_executable() -> str:
    """``$JAVA_HOME/bin/java`` or ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise KafkaNotAvailable("no Java runtime: install a JDK 17+ (Debian: openjdk-17-jdk)")
    return found


def free_port() -> int:
    """A port nothing listens on right now (the kernel's pick for an ephemeral bind)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Coordinator:
    """A FindCoordinator answer."""

    node_id: int
    host: str
    port: int


class KafkaNode:
    """One combined broker+controller JVM on fixed ports and a fixed data dir."""

    def __init__(self, cluster: KafkaCluster, node_id: int) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.port = free_port()
        self.controller_port = free_port()
        self.directory = cluster.root / f"node-{node_id}"
        self.data_dir = self.directory / "data"
        self.log_path = self.directory / "server.log"
        self.config_path = self.directory / "server.properties"
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"node {self.node_id} was never started")
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def properties(self) -> dict[str, str]:
        cluster = self.cluster
        return {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": cluster.quorum_voters(),
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            **cluster.broker_config,
        }

    def write_config(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = [f"{key}={value}" for key, value in self.properties().items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _java(self, main_class: str, *args: str, heap: bool = True) -> list[str]:
        return [
            java_executable(),
            *(self.cluster.jvm_options if heap else ("-Xmx256m",)),
            f"-Dlog4j2.configurationFile=file:{self.cluster.log4j_path}",
            f"-Dkafka.logs.dir={self.directory / 'logs'}",
            "-cp", f"{self.cluster.libs}/*",
            main_class, *args,
        ]  # fmt: skip

    def format_command(self, cluster_id: str) -> list[str]:
        return self._java(
            "kafka.tools.StorageTool",
            # "=": a random id may start with "-", which would read as an option.
            "format", f"--cluster-id={cluster_id}", "-c", str(self.config_path),
            "--ignore-formatted",
            heap=False,
        )  # fmt: skip

    def start(self) -> KafkaNode:
        """Start the JVM (without waiting for it to serve; the cluster waits)."""
        if self.running:
            raise RuntimeError(f"node {self.node_id} is already running")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self._java("kafka.Kafka", str(self.config_path)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.paused = False
        return self

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no controlled leadership hand-over."""
        if self.running:
            assert self.process is not None
            if self.paused:
                os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
            self.process.wait()
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but stops answering."""
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def stop(self, timeout: float = 60.0) -> bool:
        """SIGTERM and wait for Kafka's controlled shutdown; True if the JVM finished it
        by itself (exit 0, or 143 = terminated by SIGTERM after the shutdown hooks ran),
        False if it had to be killed past ``timeout`` or was not running."""
        if not self.running:
            return False
        assert self.process is not None
        if self.paused:
            self.resume()
        self.process.terminate()
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return False
        return code in (0, 128 + signal.SIGTERM)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class KafkaCluster:
    """A KRaft cluster of ``size`` combined nodes on 127.0.0.1.

    Defaults follow a production-shaped cluster: replication factor ``min(size, 3)``,
    ``min.insync.replicas`` 2 when there are replicas to spare, no unclean leader
    election, internal topics replicated like data. ``broker_config`` overrides or adds
    any server property.
    """

    def __init__(
        self,
        root: Path,
        size: int = 3,
        *,
        broker_config: Mapping[str, str | int] | None = None,
        heap_mb: int = 512,
        jvm_options: Iterable[str] = (),
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.root = Path(root)
        self.size = size
        self.libs = kafka_libs()
        replicas = min(size, 3)
        min_isr = 2 if replicas >= 2 else 1
        defaults: dict[str, str] = {
            "num.partitions": "1",
            "default.replication.factor": str(replicas),
            "min.insync.replicas": str(min_isr),
            "unclean.leader.election.enable": "false",
            "offsets.topic.replication.factor": str(replicas),
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(min_isr),
            "transaction.state.log.num.partitions": "3",
            "group.initial.rebalance.delay.ms": "0",
            # Tests use session timeouts of a few seconds; Kafka's floor is 6 s.
            "group.min.session.timeout.ms": "1000",
            # A stopped follower leaves the ISR after this long (Kafka's default: 30 s).
            "replica.lag.time.max.ms": "5000",
            # A killed node is fenced (and leaves the ISR) after this long (default: 9 s).
            "broker.session.timeout.ms": "5000",
            "broker.heartbeat.interval.ms": "1000",
            "auto.create.topics.enable": "true",
            "share.coordinator.state.topic.replication.factor": str(replicas),
            "share.coordinator.state.topic.min.isr": str(min_isr),
        }
        self.broker_config = {**defaults, **{k: str(v) for k, v in (broker_config or {}).items()}}
        self.jvm_options = (
            f"-Xms{min(heap_mb, 256)}m",
            f"-Xmx{heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            *jvm_options,
        )
        self.log4j_path = self.root / "log4j2.xml"
        self.cluster_id_path = self.root / "cluster.id"
        self.nodes = [KafkaNode(self, node_id) for node_id in range(1, size + 1)]

    # -- life cycle ----------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """Every node's address, for ``bootstrap.servers``."""
        return ",".join(node.bootstrap for node in self.nodes)

    def quorum_voters(self) -> str:
        return ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)

    def start(self, timeout: float = START_TIMEOUT) -> KafkaCluster:
        """Format storage on first start, start every node, wait until the cluster serves."""
        self.format()
        for node in self.nodes:
            if not node.running:
                node.start()
        self.wait_ready(timeout)
        return self

    def format(self) -> None:
        """Write every node's config and, once per cluster, format its storage."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.log4j_path.write_text(_LOG4J2)
        for node in self.nodes:
            node.write_config()
        if not self.cluster_id_path.exists():
            self._format_storage()

    def _format_storage(self) -> None:
        cluster_id = _random_cluster_id()
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            results = list(
                pool.map(
                    lambda node: subprocess.run(
                        node.format_command(cluster_id), capture_output=True, text=True, timeout=120
                    ),
                    self.nodes,
                )
            )
        for node, result in zip(self.nodes, results, strict=True):
            if result.returncode != 0:
                tail = (result.stdout + result.stderr).strip().splitlines()[-10:]
                raise KafkaStartError(f"formatting node {node.node_id} failed:\n" + "\n".join(tail))
        self.cluster_id_path.write_text(cluster_id)

    def stop(self) -> None:
        """Stop every node cleanly (in parallel: a controlled shutdown takes seconds)."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.stop(), self.nodes))

    def heal(self, timeout: float = START_TIMEOUT) -> None:
        """Resume paused nodes, start dead ones and wait until the cluster serves."""
        for node in self.nodes:
            if node.paused and node.running:
                node.resume()
            if not node.running:
                node.start()
        self.wait_ready(timeout)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def node(self, node_id: int) -> KafkaNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"no node {node_id} in this cluster")

    # -- readiness -----------------------------------------------------------------

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until every node is registered and serves, and the internal topics are led by
        a live node with their full replica set in sync."""
        deadline = time.monotonic() + timeout
        self._wait(deadline, self._all_registered, "every node registered")
        # FindCoordinator creates the internal topics on first use.
        self._wait(deadline, self._coordinators_found, "group and transaction coordinators")
        self._wait(deadline, self._internal_topics_replicated, "internal topics in sync")

    def _wait(self, deadline: float, ready: Callable[[], bool], what: str) -> None:
        delay = 0.05
        while True:
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise KafkaStartError(
                        f"Kafka node {node.node_id} exited with {node.process.returncode} "
                        f"while waiting for {what}; log tail:\n{node.log_tail()}"
                    )
            try:
                if ready():
                    return
            except (OSError, ConnectionClosed):
                pass
            if time.monotonic() > deadline:
                tails = "\n".join(
                    f"--- node {node.node_id} ---\n{node.log_tail(15)}" for node in self.nodes
                )
                raise KafkaStartError(f"Kafka cluster not ready ({what}) in time:\n{tails}")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _live_nodes(self) -> list[KafkaNode]:
        return [node for node in self.nodes if node.running and not node.paused]

    def _all_registered(self) -> bool:
        for node in self._live_nodes():
            brokers = {b.node_id for b in self.metadata((), via=node).brokers}
            if brokers != {n.node_id for n in self.nodes}:
                return False
        return True

    def _coordinators_found(self) -> bool:
        probe = "onceflow-readiness-probe"
        return all(
            self._find_coordinator(key_type, probe) is not None
            for key_type in (_GROUP_KEY, _TRANSACTION_KEY)
        )

    def _internal_topics_replicated(self) -> bool:
        replicas = int(self.broker_config["offsets.topic.replication.factor"])
        for topic in self.metadata(INTERNAL_TOPICS).topics:
            if topic.error_code != 0 or not topic.partitions:
                return False
            for partition in topic.partitions:
                if partition.leader_id < 0 or len(partition.isr_nodes) < replicas:
                    return False
        return True

    # -- what the cluster answers ---------------------------------------------------

    def connect(self, node: KafkaNode | None = None) -> KafkaConnection:
        """A raw wire connection to ``node`` (default: the first live one)."""
        target = node or self._live_nodes()[0]
        return KafkaConnection("127.0.0.1", target.port, timeout=10.0)

    def metadata(self, topics: Iterable[str], via: KafkaNode | None = None) -> Any:
        """A Metadata v12 answer for ``topics`` (none given: brokers only)."""
        module = request_module(3, _METADATA_VERSION)
        wanted = tuple(build(module.MetadataRequestTopic, name=t, topic_id=None) for t in topics)
        request = build(
            module.MetadataRequest,
            topics=wanted,
            allow_auto_topic_creation=False,
            include_topic_authorized_operations=False,
        )
        with self.connect(via) as connection:
            return connection.request(request)

    def partition_metadata(self, topic: str, partition: int, via: KafkaNode | None = None) -> Any:
        for answer in self.metadata([topic], via=via).topics:
            for entry in answer.partitions:
                if entry.partition_index == partition:
                    return entry
        raise KeyError(f"{topic}[{partition}] is not in the metadata")

    def leader(self, topic: str, partition: int = 0) -> KafkaNode:
        """The node that leads ``topic[partition]`` now."""
        leader_id = self.partition_metadata(topic, partition).leader_id
        if leader_id < 0:
            raise LookupError(f"{topic}[{partition}] has no leader")
        return self.node(leader_id)

    def isr(self, topic: str, partition: int = 0, via: KafkaNode | None = None) -> set[int]:
        """Node ids in the partition's in-sync replica set, as ``via`` (default: the
        first live node) knows it."""
        return {int(n) for n in self.partition_metadata(topic, partition, via).isr_nodes}

    def followers(self, topic: str, partition: int = 0) -> list[KafkaNode]:
        entry = self.partition_metadata(topic, partition)
        return [self.node(int(n)) for n in entry.replica_nodes if n != entry.leader_id]

    def _find_coordinator(self, key_type: int, key: str) -> Coordinator | None:
        module = request_module(10, _FIND_COORDINATOR_VERSION)
        request = build(module.FindCoordinatorRequest, key_type=key_type, coordinator_keys=(key,))
        with self.connect() as connection:
            answer = connection.request(request).coordinators[0]
        if answer.error_code != 0:
            return None
        return Coordinator(int(answer.node_id), answer.host, int(answer.port))

    def group_coordinator(self, group: str) -> KafkaNode:
        """The node FindCoordinator names for consumer group ``group``."""
        return self._coordinator(_GROUP_KEY, group)

    def transaction_coordinator(self, transactional_id: str) -> KafkaNode:
        """The node FindCoordinator names for ``transactional_id``."""
        return self._coordinator(_TRANSACTION_KEY, transactional_id)

    def _coordinator(self, key_type: int, key: str) -> KafkaNode:
        deadline = time.monotonic() + 30.0
        while (found := self._find_coordinator(key_type, key)) is None:
            if time.monotonic() > deadline:
                raise LookupError(f"no coordinator for {key!r}")
            time.sleep(0.1)
        return self.node(found.node_id)

    def wait_for_isr(
        self,
        topic: str,
        partition: int,
        size: int,
        timeout: float = 60.0,
        *,
        exact: bool = True,
        via: KafkaNode | None = None,
    ) -> set[int]:
        """Until the partition's ISR has ``size`` members (at least ``size`` if not exact)
        in ``via``'s metadata. Ask the leader itself when what it does with the ISR
        matters: other nodes may learn of a change before it applies it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                isr = self.isr(topic, partition, via)
            except KeyError:  # a new topic reaches every node's metadata a moment later
                isr = set()
            if len(isr) == size or (not exact and len(isr) >= size):
                return isr
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}[{partition}] ISR is {sorted(isr)}, wanted {size}")
            time.sleep(0.1)


@contextlib.contextmanager
def temporary_cluster(size: int = 1, **options: Any) -> Iterator[KafkaCluster]:
    """A started cluster in a temporary directory; stopped and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"onceflow-kafka-{size}n-") as root:
        cluster = KafkaCluster(Path(root), size, **options).start()
        try:
            yield cluster
        finally:
            cluster.stop()


def _random_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
