"""Black-box verification of a program we did not write: ``onceflow verify --command``.

The contract (also in the README): the program reads the input topic with a group id
of its choosing and, for each input record, writes one output record whose key (or
the header named by ``key_header``) is the input record's key. It finds the bootstrap
servers in the environment variable ``ONCEFLOW_BOOTSTRAP`` (or the ``{bootstrap}``
placeholder of the command), its instance number in ``ONCEFLOW_INSTANCE``
(``{instance}``), the topics in ``ONCEFLOW_INPUT`` and ``ONCEFLOW_OUTPUT`` (``{input}``,
``{output}``); it runs until SIGTERM and keeps a session timeout shorter than the
pause fault.

The verifier writes unique keyed inputs in chunks (and, between them, records in
transactions it aborts, which no correct program acts on), starts the instances, and
between chunks strikes with one fault of a seeded schedule: SIGKILL of an instance
(then restarted), a pause of one past its session timeout, the network faults of the
proxy in front of the broker, a kill -9 of the embedded broker. Then it reads the
output with read_committed (and runs ``sql`` when given) and judges each input key:
lost, applied once, or more than once, against the guarantee.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from onceflow.guarantees import Guarantee
from onceflow.processing import PostgresDatabase
from onceflow.testing import BrokerProcess
from onceflow.verify import checker
from onceflow.verify import faults as fault_registry
from onceflow.verify.checker import Findings, verdict
from onceflow.verify.faults import FaultContext, Target
from onceflow.verify.proxy import KafkaProxy
from onceflow.verify.recording import header
from onceflow.verify.run import Result, target_of
from onceflow.verify.workload import admin_create_topic, is_postgres, read_all

PARTITIONS = 2
DEFAULT_INPUTS = 300
DEFAULT_KILLS = 4
DEFAULT_PAUSE_SECONDS = 10.0
ABORTED_PER_CHUNK = 3
RESTART_DELAY = 0.3  # a supervisor's restart is quick, not instant
FIRST_OUTPUT_SECONDS = 60.0  # bound on the program's start-up (group join included)
# Output not growing this long after the last chunk: the program is done. Longer than
# a session timeout plus a rejoin, so a program still recovering from the last fault
# (under load) is not taken for finished.
QUIET_SECONDS = 12.0
FINISH_SECONDS = 90.0
# Bound on an open transaction holding back the output once the instances stopped:
# past librdkafka's default transaction.timeout.ms (60 s), after which the broker aborts
# a transaction its (killed) producer left open.
SETTLE_SECONDS = 70.0
STOP_SECONDS = 15.0
UNEXPECTED_RESTARTS = 5  # restarts of instances that died by themselves
WRITE_SECONDS = 30.0
# The orchestrator's own clients see every broker kill and network cut; only critical
# librdkafka logs are worth showing.
ORCHESTRATOR_LOG_LEVEL = 2
CHECK_INTERVAL = 0.25
# Each chunk goes out in this many pieces, PIECE_GAP apart: the program then makes
# several produce requests per chunk, so a fault armed for its next requests lands.
PIECES = 4
PIECE_GAP = 0.1  # how often the orchestrator looks at the program's progress
# The black-box faults of its own (the others come from the registry).
INSTANCE_KILL = "instance-kill"
INSTANCE_PAUSE = "instance-pause"


@dataclass(frozen=True)
class Program:
    """The program under test and how to read its results."""

    command: str
    input_topic: str
    output_topic: str
    key_header: str | None = None
    instances: int = 1
    sql: str | None = None
    dsn: str | None = None


class _Instances:
    """The program's running instances, each in a process group of its own so a
    SIGKILL takes its children too (a shell wrapper, a JVM launcher)."""

    def __init__(self, program: Program, bootstrap: str, logs: Path) -> None:
        self.program = program
        self.bootstrap = bootstrap
        self.logs = logs
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.starts = 0
        self.unexpected: list[str] = []

    def command(self, instance: int) -> list[str]:
        text = self.program.command
        for name, value in self.placeholders(instance).items():
            text = text.replace(f"{{{name}}}", value)
        return shlex.split(text)

    def placeholders(self, instance: int) -> dict[str, str]:
        return {
            "bootstrap": self.bootstrap, "instance": str(instance),
            "input": self.program.input_topic, "output": self.program.output_topic,
        }  # fmt: skip

    def start(self, instance: int) -> None:
        self.starts += 1
        env = dict(os.environ)
        env.update({f"ONCEFLOW_{k.upper()}": v for k, v in self.placeholders(instance).items()})
        log = open(self.logs / f"instance-{instance}-{self.starts}.log", "wb")  # noqa: SIM115
        try:
            self.processes[instance] = subprocess.Popen(
                self.command(instance), env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        finally:
            log.close()

    def _signal(self, instance: int, sig: signal.Signals) -> bool:
        process = self.processes[instance]
        if process.poll() is not None:
            return False
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def kill(self, instance: int) -> bool:
        """SIGKILL the instance; whether it was running."""
        killed = self._signal(instance, signal.SIGKILL)
        self.processes[instance].wait()
        return killed

    def pause(self, instance: int) -> bool:
        return self._signal(instance, signal.SIGSTOP)

    def resume(self, instance: int) -> None:
        self._signal(instance, signal.SIGCONT)

    def reap(self) -> None:
        """Restart (a bounded number of times) instances that exited by themselves."""
        for instance, process in list(self.processes.items()):
            code = process.poll()
            if code is None:
                continue
            self.unexpected.append(f"instance {instance} exited {code} by itself")
            if len(self.unexpected) <= UNEXPECTED_RESTARTS:
                self.start(instance)

    def stop(self) -> list[str]:
        """SIGTERM every instance; SIGKILL those still running after STOP_SECONDS."""
        for instance in self.processes:
            self._signal(instance, signal.SIGCONT)
            self._signal(instance, signal.SIGTERM)
        hung = []
        for instance, process in self.processes.items():
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                hung.append(f"instance {instance} ignored SIGTERM for {STOP_SECONDS:.0f}s")
                self.kill(instance)
        return hung


class _Inputs:
    """Writes the unique keyed inputs (directly to the broker, not through the faulty
    proxy) and remembers which were acknowledged and which were aborted."""

    def __init__(self, bootstrap: str, topic: str, run_id: str) -> None:
        self.topic = topic
        self.run_id = run_id
        self.written: list[str] = []
        self.aborted: list[str] = []
        self.where: dict[str, tuple[int, int]] = {}  # key -> (partition, offset)
        self._next = 0
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "log_level": ORCHESTRATOR_LOG_LEVEL,
            }
        )
        self._aborter = Producer(
            {
                "bootstrap.servers": bootstrap,
                "transactional.id": f"onceflow-verify-{run_id}-abort",
                "log_level": ORCHESTRATOR_LOG_LEVEL,
            }
        )
        self._aborter.init_transactions(WRITE_SECONDS)

    def _value(self, key: str) -> bytes:
        return json.dumps({"key": key}).encode()

    def write(self, count: int) -> None:
        """Write ``count`` new inputs in PIECES pieces, then an aborted transaction."""
        for piece in range(PIECES):
            self._write(count // PIECES + (1 if piece < count % PIECES else 0))
            time.sleep(PIECE_GAP)  # the workload's pace, not a wait for a condition
        self._write_aborted()

    def _write(self, count: int) -> None:
        keys = [f"{self.run_id}-{self._next + i:06d}" for i in range(count)]
        self._next += count
        failed: list[str] = []

        def delivered(error: Any, message: Message) -> None:
            key = message.key().decode()
            if error is not None:
                failed.append(key)
                return
            self.written.append(key)
            self.where[key] = (message.partition(), message.offset())

        for key in keys:
            self._producer.produce(
                self.topic, key=key, value=self._value(key), on_delivery=delivered
            )
        if self._producer.flush(WRITE_SECONDS):
            raise TimeoutError(f"inputs not acknowledged in {WRITE_SECONDS:.0f}s")
        if failed:
            raise KafkaException(f"{len(failed)} inputs were refused by the broker")

    def _write_aborted(self) -> None:
        keys = [
            f"{self.run_id}-aborted-{len(self.aborted) + i:06d}" for i in range(ABORTED_PER_CHUNK)
        ]
        self._aborter.begin_transaction()
        for key in keys:
            self._aborter.produce(self.topic, key=key, value=self._value(key))
        self._aborter.flush(WRITE_SECONDS)  # appended, so consumers can see them
        self._aborter.abort_transaction(WRITE_SECONDS)
        self.aborted += keys


class _OutputSize:
    """How many records (and markers) the output holds: the sum of its partitions'
    high watermarks, asked through one long-lived consumer."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "onceflow-verify-watch",
             "log_level": ORCHESTRATOR_LOG_LEVEL}
        )  # fmt: skip
        self._partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    def __call__(self) -> int:
        try:
            return sum(
                self._consumer.get_watermark_offsets(tp, timeout=5)[1] for tp in self._partitions
            )
        except KafkaException:
            return -1  # the broker is restarting: no news

    def close(self) -> None:
        self._consumer.close()


def held_back(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    """The partitions of ``topic`` whose last stable offset is below the high watermark
    (an open transaction hides what follows it from read_committed readers, whose end
    offsets are the LSO), each with (LSO, high watermark)."""
    ends: dict[str, list[int]] = {}
    for isolation in ("read_committed", "read_uncommitted"):
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "onceflow-verify-watch",
                             "isolation.level": isolation,
                             "log_level": ORCHESTRATOR_LOG_LEVEL})  # fmt: skip
        try:
            ends[isolation] = [
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                for p in range(PARTITIONS)
            ]
        finally:
            consumer.close()
    pairs = zip(ends["read_committed"], ends["read_uncommitted"], strict=True)
    return {p: (lso, hw) for p, (lso, hw) in enumerate(pairs) if lso < hw}


def _settled(bootstrap: str, topic: str) -> bool:
    try:
        return not held_back(bootstrap, topic)
    except KafkaException:
        return False  # the broker is restarting: not yet


def _until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(CHECK_INTERVAL)
    return bool(predicate())


def committed_positions(bootstrap: str, topic: str) -> dict[int, int]:
    """The committed positions on ``topic`` of the group that committed furthest: the
    program's group, found by listing the groups (the contract lets it pick its id).
    Empty when no group committed there (a program that keeps its positions
    elsewhere)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": ORCHESTRATOR_LOG_LEVEL})
    listed = admin.list_consumer_groups(request_timeout=10).result(timeout=WRITE_SECONDS)
    best: dict[int, int] = {}
    for group in listed.valid:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group.group_id,
                             "log_level": ORCHESTRATOR_LOG_LEVEL})  # fmt: skip
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            found = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
        finally:
            consumer.close()
        found = {p: o for p, o in found.items() if o >= 0}
        if sum(found.values()) > sum(best.values()):
            best = found
    return best


def _output_key(key_header: str | None) -> Any:
    def key(message: Message) -> str | None:
        if key_header is not None:
            return header(message.headers(), key_header)
        raw = message.key()
        return raw.decode("utf-8", "replace") if raw is not None else None

    return key


def query_keys(sql: str, dsn: str) -> list[str]:
    """The first column of ``sql``'s rows, on PostgreSQL (a URL or conninfo string) or
    SQLite (a path, opened read-only: the program's database is left as it is)."""
    if is_postgres(dsn):
        database = PostgresDatabase(dsn)
        try:
            return [str(row[0]) for row in database.query(sql)]
        finally:
            database.close()
    with closing(sqlite3.connect(f"file:{dsn}?mode=ro", uri=True)) as connection:
        return [str(row[0]) for row in connection.execute(sql).fetchall()]


def judge(
    written: Iterable[str],
    aborted: Iterable[str],
    output_keys: Iterable[str | None],
    applied_keys: Iterable[str] | None = None,
) -> Findings:
    """Each input key: lost, once, or more than once in the output (and in the
    database when ``applied_keys`` is given); outputs of aborted inputs and of keys no
    input had are findings too."""
    written, aborted = list(written), set(aborted)
    findings = Findings(orders=len(written))
    places = [("output", Counter(output_keys), checker.DUPLICATE)]
    if applied_keys is not None:
        places.append(("database", Counter(applied_keys), checker.DUPLICATE_APPLICATION))
    for where, counts, duplicate in places:
        for key in written:
            if counts[key] == 0:
                findings.lost.add(key)
                findings.add(checker.LOST, key, f"never in the {where}")
            elif counts[key] > 1:
                findings.duplicated.add(key)
                findings.add(duplicate, key, f"{counts[key]} times in the {where}")
        for key in sorted(set(counts) & aborted):
            findings.add(checker.ABORTED_READ, key, f"an aborted input reached the {where}")
        for key in sorted(str(k) for k in set(counts) - set(written) - aborted):
            findings.add(checker.UNEXPLAINED, key, f"in the {where}, but no input had this key")
    return findings


def fault_names(target: Target) -> list[str]:
    """The faults a black-box run can strike ``target`` with."""
    live = [f.name for f in fault_registry.applicable(target) if f.inject is not None]
    return [INSTANCE_KILL, INSTANCE_PAUSE, *live]


def _schedule(
    rng: random.Random, kills: int, target: Target, chosen: Sequence[str] | None
) -> list[str]:
    names = fault_names(target)
    unknown = sorted(set(chosen or ()) - set(names))
    if unknown:
        raise ValueError(f"no black-box fault {unknown[0]!r}; choose from {', '.join(names)}")
    chosen = list(chosen or names)
    schedule = [n for n in chosen if n != INSTANCE_KILL]
    if INSTANCE_KILL in chosen:
        schedule += [INSTANCE_KILL] * kills
    rng.shuffle(schedule)
    return schedule


def verify_program(
    program: Program,
    guarantee: Guarantee,
    *,
    seed: int,
    inputs: int = DEFAULT_INPUTS,
    kills: int = DEFAULT_KILLS,
    pause_seconds: float = DEFAULT_PAUSE_SECONDS,
    bootstrap: str | None = None,
    faults: Sequence[str] | None = None,
    workdir: Path | None = None,
) -> Result:
    """Run ``program`` under the seeded fault schedule and judge its output.

    ``program.instances`` copies run at once; ``kills`` SIGKILL rounds join the other
    faults (``faults``, by default every one ``fault_names`` lists for the target) in a
    schedule shuffled by ``seed``. ``workdir`` keeps the broker data and
    the instances' logs (by default a temporary directory, removed at the end)."""
    started = time.monotonic()
    rng = random.Random(seed)
    target = target_of(bootstrap)
    schedule = _schedule(rng, kills, target, faults)
    scratch = workdir is None
    root = Path(workdir or tempfile.mkdtemp(prefix="onceflow-blackbox-"))
    root.mkdir(parents=True, exist_ok=True)
    notes = [f"seed {seed} (replay with --seed {seed})"]
    doubts: list[str] = []
    broker = BrokerProcess(root / "broker-data").start() if bootstrap is None else None
    direct = bootstrap or broker.bootstrap  # type: ignore[union-attr]
    proxy = KafkaProxy(direct).start()
    ctx = FaultContext(proxy, broker)
    instances = _Instances(program, proxy.bootstrap, root)
    registry = fault_registry.FAULTS
    output_size: _OutputSize | None = None
    try:
        create = admin_create_topic(direct)
        create(program.input_topic, PARTITIONS)
        create(program.output_topic, PARTITIONS)
        writer = _Inputs(direct, program.input_topic, f"k{seed}")
        chunk = max(1, inputs // (len(schedule) + 1))
        for instance in range(program.instances):
            instances.start(instance)
        writer.write(chunk)
        output_size = _OutputSize(direct, program.output_topic)
        size = output_size
        if not _until(lambda: instances.reap() or size() > 0, FIRST_OUTPUT_SECONDS):
            doubts.append(f"the program wrote no output in {FIRST_OUTPUT_SECONDS:.0f}s")
            schedule = []
        for round_, fault in enumerate(schedule, start=1):
            time.sleep(rng.uniform(0.05, 1.0))  # a seeded moment while the chunk is worked on
            instances.reap()
            victim = rng.randrange(program.instances)
            if fault == INSTANCE_KILL:
                if instances.kill(victim):
                    notes.append(f"round {round_}: instance {victim} SIGKILLed, restarted")
                else:
                    doubts.append(f"round {round_}: instance {victim} was not running to kill")
                time.sleep(RESTART_DELAY)
                instances.start(victim)
            elif fault == INSTANCE_PAUSE:
                if instances.pause(victim):
                    time.sleep(pause_seconds)
                    instances.resume(victim)
                    notes.append(f"round {round_}: instance {victim} paused {pause_seconds:.0f}s")
                else:
                    doubts.append(f"round {round_}: instance {victim} was not running to pause")
            else:
                inject = registry[fault].inject
                assert inject is not None
                notes.append(f"round {round_}: {fault}: {inject(ctx)}")
            writer.write(chunk if round_ < len(schedule) else inputs - chunk * len(schedule))
        wanted = set(writer.written)
        progress = {"size": -1, "since": time.monotonic()}

        def finished() -> bool:
            instances.reap()
            now = size()
            if now != progress["size"]:
                progress["size"], progress["since"] = now, time.monotonic()
            if guarantee is not Guarantee.AT_MOST_ONCE and now >= len(wanted):
                seen = read_all(
                    direct,
                    program.output_topic,
                    "read_committed",
                    row=_output_key(program.key_header),
                    deadline_seconds=5,
                )
                if wanted <= set(seen):  # fmt: skip
                    return True
            return time.monotonic() - progress["since"] > QUIET_SECONDS

        if not _until(finished, FINISH_SECONDS):
            doubts.append(f"the output was still growing after {FINISH_SECONDS:.0f}s")
        # Only now: a fault armed in the last round (lost responses wait for the next
        # requests) lands while the program works through the last chunk.
        for fault in {f for f in schedule if f in registry}:
            missed = registry[fault].missed
            reason = missed(ctx) if missed is not None else None
            if reason is not None:
                doubts.append(f"{fault} did not land: {reason}")
        doubts += instances.unexpected
        doubts += instances.stop()
        committed = committed_positions(direct, program.input_topic)
        # A transaction a killed instance left open hides the outputs after it until
        # the broker aborts it: judging before that would call them lost.
        settled = _until(lambda: _settled(direct, program.output_topic), SETTLE_SECONDS)
        if not settled:
            doubts.append(f"an open transaction still held back the output after "
                          f"{SETTLE_SECONDS:.0f}s: what follows it is neither visible nor "
                          "aborted yet")  # fmt: skip
        try:
            output = read_all(direct, program.output_topic, "read_committed",
                              row=_output_key(program.key_header))  # fmt: skip
        except TimeoutError as exc:
            doubts.append(f"the output never settled: {exc}")
            output, settled = [], False
        applied = query_keys(program.sql, program.dsn) if program.sql and program.dsn else None
        # Inputs past the program's committed positions were never claimed done: if
        # they are missing the program did not finish, which is not loss.
        # An output that never settled may hold any missing input's output: none is lost.
        unclaimed = {
            key for key, (partition, offset) in writer.where.items()
            if not settled or (committed and offset >= committed.get(partition, 0))
        }  # fmt: skip
        missing = unclaimed - set(output)
        if missing and settled:
            doubts.append(f"{len(missing)} inputs past the committed positions were never "
                          "processed: the program did not finish")  # fmt: skip
        claimed = [key for key in writer.written if key not in missing]
        findings = judge(claimed, writer.aborted, output, applied)
    finally:
        for instance in instances.processes:
            if instances.processes[instance].poll() is None:
                instances.kill(instance)
        if output_size is not None:
            output_size.close()
        proxy.stop()
        if broker is not None:
            broker.stop()
        if scratch:
            shutil.rmtree(root, ignore_errors=True)
    counts = Counter(schedule)
    names = tuple(f"{name} x{n}" if n > 1 else name for name, n in counts.items())
    return Result(
        guarantee, names, target.name, findings, verdict(guarantee, findings),
        time.monotonic() - started, notes, inconclusive=doubts,
    )  # fmt: skip
