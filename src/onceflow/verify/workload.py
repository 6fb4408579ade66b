"""The order/payment workload of a verify run: its topics, its processes, its final reads.

Producers and processors run as separate OS processes (``onceflow.verify.worker``) so
faults can kill them for real; each writes its own history file into the run's
directory. The orchestrator's own events (intent, faults, final reads, database state)
go to ``orchestrator.jsonl``.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import NewTopic

from onceflow.client_logging import client_config
from onceflow.client_settings import write_properties
from onceflow.examples.orders import balances, ledger, make_orders
from onceflow.guarantees import Guarantee
from onceflow.kafka_admin import create_topics
from onceflow.processing import Database, PostgresDatabase, SqliteDatabase
from onceflow.verify.history import WRITE_ID_HEADER, Event, Recorder, load
from onceflow.verify.recording import header, value_id

INPUT_PARTITIONS = 2
OUTPUT_PARTITIONS = 1
READ_DEADLINE = 30.0
PROCESS_TIMEOUT = 90.0
POLL_INTERVAL = 0.02
# The orchestrator's own clients outlive broker kills; their disconnect notices are noise.
QUIET_LOG_LEVEL = 3

CreateTopic = Callable[[str, int], None]


def admin_create_topic(
    bootstrap: str, client_settings: Mapping[str, str] | None = None
) -> CreateTopic:
    """Create topics with the Kafka admin API (any real broker), replicated as the
    cluster's default.replication.factor says."""

    def create(name: str, partitions: int) -> None:
        create_topics(
            bootstrap, NewTopic(name, partitions), timeout=READ_DEADLINE,
            client_settings=client_settings,
        )  # fmt: skip

    return create


def history_row(message: Message) -> list[Any]:
    """A record as the history's final reads list it: [partition, offset, write id,
    value id, key]."""
    value = message.value()
    return [
        message.partition(), message.offset(),
        header(message.headers(), WRITE_ID_HEADER) or value_id(value),
        value_id(value), message.key().decode() if message.key() else None,
    ]  # fmt: skip


def read_all(
    bootstrap: str,
    topic: str,
    isolation: str,
    *,
    row: Callable[[Message], Any] = history_row,
    deadline_seconds: float = READ_DEADLINE,
    client_settings: Mapping[str, str] | None = None,
) -> list[Any]:
    """Every record of ``topic`` a ``isolation`` consumer sees, as ``row`` makes them
    (by default ``history_row``): read until each position reaches the high watermark,
    or raise TimeoutError after ``deadline_seconds``."""
    consumer = Consumer(
        client_config(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"verify-final-{time.monotonic_ns()}",
                "log_level": QUIET_LOG_LEVEL,
                "enable.auto.commit": False,
                "isolation.level": isolation,
            },
            client_settings,
        )
    )
    rows: list[Any] = []
    try:
        metadata = consumer.list_topics(topic, timeout=READ_DEADLINE).topics[topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(metadata.partitions)]
        ends = {
            tp.partition: consumer.get_watermark_offsets(tp, timeout=READ_DEADLINE)[1] for tp in tps
        }
        todo = [tp for tp in tps if ends[tp.partition] > 0]
        if not todo:
            return rows
        consumer.assign(todo)
        deadline = time.monotonic() + deadline_seconds
        while time.monotonic() < deadline:
            positions = {tp.partition: tp.offset for tp in consumer.position(todo)}
            if all(positions[tp.partition] >= ends[tp.partition] for tp in todo):
                return rows
            for message in consumer.consume(num_messages=500, timeout=0.2):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(error)
                rows.append(row(message))
        raise TimeoutError(f"final read of {topic} did not reach {ends} in {deadline_seconds}s")
    finally:
        consumer.close()


def is_postgres(location: str) -> bool:
    """Whether ``location`` names a PostgreSQL database (URL or conninfo) or a file."""
    return location.startswith(("postgres://", "postgresql://")) or "dbname=" in location


def open_database(location: str) -> Database:
    """PostgreSQL for a postgresql:// URL or a libpq conninfo string (``dbname=...``),
    else the SQLite file at ``location``."""
    if is_postgres(location):
        return PostgresDatabase(location)
    return SqliteDatabase(location)


def count_events(path: Path, kind: str) -> int:
    if not path.exists():
        return 0
    return sum(1 for event in load(path) if event["type"] == kind)


@dataclass
class Workload:
    """One run's topics, database and processes.

    ``client_bootstrap`` is where the workload's clients connect (the fault proxy);
    ``direct_bootstrap`` is the broker itself, used for setup and the final reads.
    ``client_settings`` (security) go to the clients that connect directly,
    ``proxied_settings`` to those behind the proxy (which differ in the CA they trust
    when the proxy speaks TLS); the workers read them from owner-only files.
    """

    guarantee: Guarantee
    orders: int
    workdir: Path
    client_bootstrap: str
    direct_bootstrap: str
    eos_sink: bool = False
    #: A PostgreSQL URL for the pipeline's database; None: a SQLite file in ``workdir``.
    database_url: str | None = None
    run_id: str = field(default_factory=lambda: f"{time.time_ns():x}")
    record_delay_ms: float = 0.0
    client_settings: dict[str, str] = field(default_factory=dict)
    proxied_settings: dict[str, str] = field(default_factory=dict)
    _procs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.history_dir = self.workdir / "history"
        self.history_dir.mkdir(parents=True, exist_ok=True)
        self.recorder = Recorder(self.history_dir / "orchestrator.jsonl", "orchestrator")
        self.input_topic = f"verify-{self.run_id}-orders"
        self.output_topic = f"verify-{self.run_id}-payments"
        self.group = f"verify-{self.run_id}-charger"
        # One pipeline instance, restarted: every worker of the run shares its
        # group.instance.id and transactional id, so a successor's join and
        # init_transactions fence its predecessor.
        self.instance = f"{self.group}-a"
        self.transactional_id = f"{self.group}-instance"
        self.db_path = self.workdir / "charges.db"
        self.database = self.database_url or str(self.db_path)
        self.order_list = make_orders(self.orders)
        self._settings_files = {
            direct: write_properties(self.workdir / f"client-{name}.properties", settings)
            for direct, name, settings in (
                (True, "direct", self.client_settings),
                (False, "proxied", self.proxied_settings),
            )
        }

    # -- setup ---------------------------------------------------------------------------

    def setup(self, create_topic: CreateTopic) -> None:
        """Create the topics and record what the workload means to do."""
        create_topic(self.input_topic, INPUT_PARTITIONS)
        if not self.eos_sink:
            create_topic(self.output_topic, OUTPUT_PARTITIONS)
        self.recorder.record(
            "intent", guarantee=self.guarantee.value, input_topic=self.input_topic,
            output_topic=None if self.eos_sink else self.output_topic,
            orders={o.order_id: [o.customer, o.amount] for o in self.order_list},
        )  # fmt: skip

    # -- processes -------------------------------------------------------------------

    def _command(self, role: str, proc: str, *args: str, direct: bool = False) -> list[str]:
        return [
            sys.executable, "-m", "onceflow.verify.worker", role,
            "--history", str(self.history_dir / f"{proc}.jsonl"), "--proc", proc,
            "--guarantee", self.guarantee.value,
            "--client-config", str(self._settings_files[direct]), *args,
        ]  # fmt: skip

    def history_of(self, proc: str) -> Path:
        return self.history_dir / f"{proc}.jsonl"

    def produce(self, indices: list[int], *, crash_after: int = 0) -> tuple[str, int]:
        """Run one order producer over ``indices``; (its name, its exit code)."""
        proc = f"producer-{next(self._procs)}"
        todo = self.workdir / f"{proc}.json"
        todo.write_text(json.dumps(indices))
        args = [
            "--bootstrap", self.client_bootstrap, "--topic", self.input_topic,
            "--orders", str(self.orders), "--send", str(todo),
        ]  # fmt: skip
        if self.guarantee is Guarantee.EXACTLY_ONCE:
            args += ["--tid", f"verify-{self.run_id}-order-producer"]
        if crash_after:
            args += ["--crash-after", str(crash_after)]
        done = self._run(self._command("producer", proc, *args), proc)
        return proc, done

    def start_processor(
        self,
        *,
        crash_at: str | None = None,
        pause_at: str | None = None,
        idle: float = 2.0,
    ) -> tuple[str, subprocess.Popen[str]]:
        """Start one pipeline worker; (its name, the process). Every worker is the same
        pipeline instance, restarted: one group.instance.id, one transactional id."""
        proc = f"processor-{next(self._procs)}"
        args = [
            "--bootstrap", self.client_bootstrap, "--db", self.database,
            "--source", self.input_topic, "--payments", self.output_topic,
            "--group", self.group, "--instance", self.instance,
            "--transactional-id", self.transactional_id,
            "--idle", str(idle), "--max-seconds", str(PROCESS_TIMEOUT - 10),
            "--record-delay-ms", str(self.record_delay_ms),
        ]  # fmt: skip
        if self.eos_sink:
            args.append("--eos-sink")
        if crash_at:
            args += ["--crash-at", crash_at]
        if pause_at:
            args += ["--pause-at", pause_at]
        return proc, self._start(self._command("processor", proc, *args), proc)

    def start_reader(self) -> subprocess.Popen[str]:
        """Tail the topics with read_committed while the run goes on."""
        topics = self.input_topic if self.eos_sink else f"{self.input_topic},{self.output_topic}"
        args = ["--bootstrap", self.direct_bootstrap, "--topic", topics, "--max-seconds", "300"]
        return self._start(self._command("reader", "reader", *args, direct=True), "reader")

    def _start(self, command: list[str], proc: str) -> subprocess.Popen[str]:
        log = open(self.workdir / f"{proc}.log", "w")  # noqa: SIM115 - handed to the child
        try:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        finally:
            log.close()

    def _run(self, command: list[str], proc: str) -> int:
        process = self._start(command, proc)
        return wait(process, PROCESS_TIMEOUT)

    def log_tail(self, proc: str, chars: int = 2000) -> str:
        path = self.workdir / f"{proc}.log"
        return path.read_text()[-chars:] if path.exists() else ""

    # -- the end -----------------------------------------------------------------------

    def finish(self) -> None:
        """Record the final reads of every topic and the database's state."""
        topics = [self.input_topic] + ([] if self.eos_sink else [self.output_topic])
        for topic in topics:
            for isolation in ("read_committed", "read_uncommitted"):
                rows = read_all(
                    self.direct_bootstrap, topic, isolation, client_settings=self.client_settings
                )
                self.recorder.record("final_read", isolation=isolation, topic=topic, records=rows)
        if self.database_url or self.db_path.exists():
            db = open_database(self.database)
            try:
                self.recorder.record("db_state", ledger=ledger(db), balances=balances(db))
            finally:
                db.close()

    def input_ends(self) -> dict[int, int]:
        """Per input partition, the offset after its last committed record: where the
        pipeline's committed position ends once everything is processed (aborted
        records and markers after it are never delivered, so never committed past)."""
        ends: dict[int, int] = {}
        for partition, offset, *_ in read_all(
            self.direct_bootstrap, self.input_topic, "read_committed",
            client_settings=self.client_settings,
        ):  # fmt: skip
            ends[partition] = max(ends.get(partition, 0), offset + 1)
        return ends

    def committed(self) -> dict[int, int]:
        """The pipeline's committed input positions (in the database for the
        exactly-once sink, in the group otherwise); empty when unreachable."""
        if self.eos_sink:
            if not (self.database_url or self.db_path.exists()):
                return {}
            db = open_database(self.database)
            try:
                rows = db.query(
                    "SELECT part, next_offset FROM onceflow_offsets WHERE grp = ? AND topic = ?",
                    (self.group, self.input_topic),
                )
            except Exception:
                return {}  # the worker has not created the table yet
            finally:
                db.close()
            return {int(p): int(o) for p, o in rows}
        consumer = Consumer(
            client_config(
                {
                    "bootstrap.servers": self.direct_bootstrap,
                    "group.id": self.group,
                    "log_level": QUIET_LOG_LEVEL,
                },
                self.client_settings,
            )
        )
        try:
            tps = [TopicPartition(self.input_topic, p) for p in range(INPUT_PARTITIONS)]
            return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=5)}
        except KafkaException:
            return {}
        finally:
            consumer.close()

    def events_of(self, proc: str) -> list[Event]:
        path = self.history_of(proc)
        return load(path) if path.exists() else []


def wait(process: subprocess.Popen[str], timeout: float) -> int:
    """Wait for ``process``; a process that hangs past ``timeout`` is killed (by PID)."""
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(POLL_INTERVAL)
    return predicate()
