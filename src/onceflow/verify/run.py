"""One verify run: start the target, drive the workload through the faults, check.

``verify(guarantee, faults)`` runs the order/payment pipeline against the embedded
broker (or ``bootstrap``), with every client behind a ``KafkaProxy``, and returns a
``Result`` with the checker's findings, the guarantee's verdict and the run's outcome:
pass, fail, or inconclusive when a fault did not land, the workload did not finish or a
process died of something other than the injected fault.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onceflow.broker.security.tls import TlsConfig, server_context, write_self_signed
from onceflow.client_settings import tls_context, uses_tls
from onceflow.guarantees import Guarantee
from onceflow.processing.errors import InstanceFencedError
from onceflow.testing import BrokerProcess, KafkaCluster
from onceflow.verify import faults as fault_registry
from onceflow.verify import history
from onceflow.verify.checker import Findings, Verdict, check, verdict
from onceflow.verify.faults import (
    Fault,
    FaultContext,
    Target,
    cluster_target,
    zombie_pause_point,
)
from onceflow.verify.history import Event
from onceflow.verify.outcome import Outcome, outcome_of
from onceflow.verify.proxy import KafkaProxy, ProxyTls
from onceflow.verify.workload import (
    PROCESS_TIMEOUT,
    CreateTopic,
    Workload,
    admin_create_topic,
    count_events,
    wait,
    wait_for,
)

DEFAULT_ORDERS = 400
PRODUCER_CRASH_FRACTION = 3  # the producer dies after a third of the orders
LIVE_FAULT_EVERY = 25  # records the last worker processes before each live fault
WORKER_IDLE = 60.0  # the orchestrator, not idleness, decides that the work is done
QUIET_SECONDS = 6.0  # no progress for this long (after the faults): the work is done
STOP_SECONDS = 30.0  # a worker that has not stopped this long after SIGTERM is hung
WORKER_RESTARTS = 3  # restarts of a last worker that died of an error
RECORD_DELAY_MS = 4.0  # pace of the last worker when live faults must land mid-stream
# Bound on the zombie's successor getting the partitions and processing (it takes the
# zombie's static membership at once; a rebalance may still have to run).
TAKEOVER_SECONDS = 45.0
Progress = Callable[[str, int, int], None]
# What librdkafka calls a producer fenced by a newer one with its transactional id.
FENCED = "_FENCED"
# What librdkafka says when a static member is fenced by one with its group.instance.id:
# a successor of the same instance, or a rejoin after a coordinator moved mid-join.
FENCED_INSTANCE = "fenced by other consumer with same group.instance.id"
# What the runtime raises when it finds a newer runner holding its identity.
FENCED_BY_OWN_IDENTITY = InstanceFencedError.__name__


class RunError(RuntimeError):
    """The run itself broke (a worker failed or hung), so nothing can be concluded:
    ``verify`` turns it into an inconclusive result."""


@dataclass
class Result:
    """The outcome of one verify run."""

    guarantee: Guarantee
    faults: tuple[str, ...]
    target: str
    findings: Findings
    verdict: Verdict
    seconds: float
    notes: list[str] = field(default_factory=list)
    history: list[Event] = field(default_factory=list, repr=False)
    #: Why the run cannot vouch for the guarantee (empty: it can).
    inconclusive: list[str] = field(default_factory=list)
    #: The exactly-once database sink the payments went to ("sqlite", "postgresql"),
    #: or None: the payments topic (and the idempotent SQLite sink).
    sink: str | None = None

    @property
    def outcome(self) -> Outcome:
        return outcome_of(not self.verdict.ok, self.inconclusive)

    @property
    def ok(self) -> bool:
        """Passed: no violation, and every fault landed on a run that finished."""
        return self.outcome is Outcome.PASS

    @property
    def smoke_test(self) -> bool:
        """No fault was injected (``--fault none``): only the set-up was exercised."""
        return not self.faults

    def summary(self) -> str:
        if self.outcome is Outcome.INCONCLUSIVE:
            return "inconclusive: " + "; ".join(self.inconclusive)
        return self.verdict.summary()

    def to_json(self) -> dict[str, Any]:
        """The result as plain data (no history), for ``--json``."""
        f = self.findings
        return {
            "guarantee": self.guarantee.value,
            "faults": list(self.faults),
            "sink": self.sink,
            "target": self.target,
            "ok": self.ok,
            "verdict": self.outcome.value,
            "smoke_test": self.smoke_test,
            "summary": self.summary(),
            "inconclusive": self.inconclusive,
            "seconds": round(self.seconds, 2),
            "orders": f.orders,
            "lost": len(f.lost),
            "duplicated": len(f.duplicated),
            "balances_correct": f.balances_correct,
            "anomalies": f.counts(),
            "violations": self.verdict.violations,
            "examples": [
                {"kind": a.kind, "subject": a.subject, "detail": a.detail} for a in f.anomalies[:20]
            ],
            "notes": self.notes,
        }


def _resend_after_producer_crash(
    guarantee: Guarantee, events: list[Event], planned: list[int]
) -> list[int]:
    """What a producer application resends after its process died: at most once
    nothing it handed to the client; at least once everything unacknowledged; exactly
    once everything outside a committed transaction."""
    sent = {e["value_id"] for e in events if e["type"] == "send"}
    if guarantee is Guarantee.AT_MOST_ONCE:
        done = sent
    elif guarantee is Guarantee.AT_LEAST_ONCE:
        by_id = {e["id"]: e["value_id"] for e in events if e["type"] == "send"}
        done = {by_id[e["id"]] for e in events if e["type"] == "ack"}
    else:
        committed = {e["txn"] for e in events if e["type"] == "txn_commit"}
        done = {e["value_id"] for e in events if e["type"] == "send" and e["txn"] in committed}
    return [i for i in planned if f"order-{i:06d}" not in done]


class _Run:
    """The state of one run while it goes."""

    def __init__(
        self,
        workload: Workload,
        faults: list[Fault],
        ctx: FaultContext,
        progress: Progress | None,
    ) -> None:
        self.workload = workload
        self.faults = faults
        self.ctx = ctx
        self.progress = progress
        self.notes: list[str] = []
        self.doubts: list[str] = []
        # Workers other than the last one that are still running (a resumed zombie).
        self.others: list[tuple[str, subprocess.Popen[str]]] = []
        crashes = sum(1 for f in faults if f.stage == "crash")
        self.total_steps = 4 + crashes
        self.step = 0

    def advance(self, description: str) -> None:
        self.step += 1
        if self.progress is not None:
            self.progress(description, self.step, self.total_steps)

    def note(self, fault: str, detail: str) -> None:
        self.notes.append(f"{fault}: {detail}")
        self.workload.recorder.record("fault", name=fault, detail=detail)

    def doubt(self, fault: str, detail: str) -> None:
        """Note something that makes the run inconclusive."""
        self.note(fault, detail)
        self.doubts.append(f"{fault}: {detail}")

    def worker_failed(self, proc: str, code: int) -> None:
        """A worker that died of an error makes the run inconclusive, unless it was
        fenced: then its death is the injected fault's doing (the zombie and its
        successor share a transactional id, and whichever is older is fenced)."""
        log = self.workload.log_tail(proc, chars=100_000)
        detail = f"{proc} exited {code}: {_last_line(log)}"
        if any(sign in log for sign in (FENCED, FENCED_INSTANCE, FENCED_BY_OWN_IDENTITY)):
            self.note("worker-fenced", detail)
        else:
            self.doubt("worker-failure", detail)

    def strike(self, fault: Fault, when: str = "") -> None:
        """Inject ``fault``; one that cannot be injected makes the run inconclusive."""
        assert fault.inject is not None
        try:
            self.note(fault.name, when + fault.inject(self.ctx))
        except Exception as exc:  # a fault that broke is a doubt, never a crash
            self.doubt(fault.name, f"{when}could not be injected: {exc}")

    def missed_faults(self) -> None:
        """Doubt every fault that, asked after the run, says it did not land."""
        for fault in self.faults:
            reason = fault.missed(self.ctx) if fault.missed is not None else None
            if reason is not None:
                self.doubt(fault.name, f"did not land: {reason}")

    def produce(self) -> None:
        w = self.workload
        for fault in self.faults:
            if fault.stage == "produce" and fault.inject is not None:
                self.strike(fault)
        planned = list(range(w.orders))
        if any(f.name == "producer-crash" for f in self.faults):
            crash_after = max(1, w.orders // PRODUCER_CRASH_FRACTION)
            proc, code = w.produce(planned, crash_after=crash_after)
            if code != -signal.SIGKILL:
                raise RunError(f"{proc} did not crash (exit {code}):\n{w.log_tail(proc)}")
            planned = _resend_after_producer_crash(w.guarantee, w.events_of(proc), planned)
            self.note("producer-crash", f"{proc} killed after {crash_after} sends; "
                      f"the next producer sends {len(planned)} orders")  # fmt: skip
        proc, code = w.produce(planned)
        if code != 0:
            raise RunError(f"{proc} failed (exit {code}):\n{w.log_tail(proc)}")

    def crash_workers(self) -> None:
        w = self.workload
        for fault in self.faults:
            if fault.stage != "crash":
                continue
            self.advance(f"worker crash: {fault.name}")
            point = fault.crash_at[w.guarantee]
            proc, process = w.start_processor(crash_at=point)
            code = wait(process, PROCESS_TIMEOUT)
            if code == -signal.SIGKILL:
                self.note(fault.name, f"{proc} killed at {point}")
            elif code == 0:
                self.doubt(fault.name, f"did not land: {proc} never reached {point}")
            else:
                raise RunError(f"{proc} failed (exit {code}):\n{w.log_tail(proc)}")

    def zombie(self, fault: Fault) -> tuple[str, subprocess.Popen[str]]:
        """Start the worker that becomes a zombie; once it has stopped itself, start its
        successor, let it take the partitions and process, then resume the zombie.
        Returns the successor, which the run then treats as its last worker."""
        w = self.workload
        point = zombie_pause_point(w.guarantee, w.eos_sink)
        zproc, zombie = w.start_processor(idle=WORKER_IDLE, pause_at=point)
        self.others.append((zproc, zombie))
        if not wait_for(lambda: _stopped(zombie) or zombie.poll() is not None, PROCESS_TIMEOUT):
            raise RunError(f"{zproc} never reached {point}:\n{w.log_tail(zproc)}")
        if zombie.poll() is not None:
            raise RunError(f"{zproc} exited {zombie.returncode} before pausing at {point}:\n"
                           f"{w.log_tail(zproc)}")  # fmt: skip
        # A restart of the same instance, as a supervisor makes it: the same identity, so
        # the successor's init_transactions fences the zombie's producer and its join
        # takes the zombie's static membership (group.instance.id) with its partitions.
        proc, process = w.start_processor(idle=WORKER_IDLE)
        target = LIVE_FAULT_EVERY
        took_over = wait_for(
            lambda: (
                count_events(w.history_of(proc), "process") >= target or process.poll() is not None
            ),
            TAKEOVER_SECONDS,
        )
        zombie.send_signal(signal.SIGCONT)
        if not took_over or process.poll() is not None:
            raise RunError(f"{proc} did not take over from the paused {zproc}:\n"
                           f"{w.log_tail(proc)}")  # fmt: skip
        self.note(
            fault.name,
            f"{zproc} stopped at {point}; resumed after {proc}, a restart with its "
            f"identity, took its partitions and processed {target} records",
        )
        return proc, process

    def stop_others(self) -> None:
        """SIGTERM (by PID) the other workers still running; an error exit is noted."""
        for proc, process in self.others:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # a stopped process cannot act on TERM
                process.send_signal(signal.SIGTERM)
            try:
                code = wait(process, STOP_SECONDS)
            except subprocess.TimeoutExpired:
                code = -signal.SIGKILL
            if code not in (0, -signal.SIGTERM):
                self.worker_failed(proc, code)
        self.others.clear()

    def kill_others(self) -> None:
        for _, process in self.others:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait()

    def last_worker(self) -> None:
        w = self.workload
        zombie = next((f for f in self.faults if f.stage == "zombie"), None)
        if zombie is not None:
            proc, process = self.zombie(zombie)
        else:
            proc, process = w.start_processor(idle=WORKER_IDLE)
        live = [f for f in self.faults if f.stage == "live" or f.name == "lost-produce-response"]
        for index, fault in enumerate(live, start=1):
            target = index * LIVE_FAULT_EVERY
            reached = wait_for(
                lambda t=target: (
                    count_events(w.history_of(proc), "process") >= t or process.poll() is not None
                ),
                STOP_SECONDS,
            )
            if not reached or process.poll() is not None:
                self.doubt(fault.name, f"did not land: {proc} did not reach {target} records")
                continue
            assert fault.inject is not None
            self.strike(fault, f"while {proc} ran: ")
        ends = w.input_ends()
        progress: dict[str, Any] = {"seen": None, "since": time.monotonic()}

        def done() -> bool:
            committed = w.committed()
            if all(committed.get(p, -1) >= end for p, end in ends.items()):
                return True
            # A broker whose read_committed shows aborted records makes ``ends`` too
            # far; then the work is done when nothing has moved for a while.
            seen = count_events(w.history_of(proc), "process")
            if seen != progress["seen"] or not count_events(w.history_of(proc), "assign"):
                progress["seen"], progress["since"] = seen, time.monotonic()
            return time.monotonic() - progress["since"] > QUIET_SECONDS

        for attempt in range(WORKER_RESTARTS + 1):
            wait_for(lambda p=process: p.poll() is not None or done(), PROCESS_TIMEOUT)
            stopped = process.poll() is None
            if stopped:
                # Everything is committed: ask the worker to finish (SIGTERM, by PID).
                process.send_signal(signal.SIGTERM)
            try:
                code = wait(process, STOP_SECONDS)
            except subprocess.TimeoutExpired:
                code = -signal.SIGKILL  # hung: ``wait`` killed it, as a liveness probe would
            # Killed by our SIGTERM means it had not started its loop: nothing was open.
            if (code == 0 or (stopped and code == -signal.SIGTERM)) and done():
                self.stop_others()
                return
            # A supervisor restarts a worker that died of an error; the history shows
            # whether the restart kept the guarantee.
            self.worker_failed(proc, code)
            if attempt < WORKER_RESTARTS:
                proc, process = w.start_processor(idle=WORKER_IDLE)
        notes = "\n".join(self.notes)
        raise RunError(f"{proc} did not finish the work:\n{notes}\n{w.log_tail(proc)}")


def _stopped(process: subprocess.Popen[str]) -> bool:
    """True once ``process`` is stopped by a signal (state T in /proc)."""
    try:
        with open(f"/proc/{process.pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except FileNotFoundError:
        return False


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line and not line.startswith("%")]
    return lines[-1][:300] if lines else "no output"


def proxy_tls(
    settings: Mapping[str, str], directory: Path
) -> tuple[ProxyTls | None, dict[str, str]]:
    """For client settings over TLS (SSL, SASL_SSL): the proxy's TLS (a CA and
    certificate of its own written to ``directory``) and the settings of the clients
    behind it, which trust that CA instead; otherwise (None, the settings unchanged)."""
    if not uses_tls(settings):
        return None, dict(settings)
    upstream = tls_context(settings)
    files = write_self_signed(directory)
    tls = ProxyTls(server_context(TlsConfig(files.certfile, files.keyfile)), upstream)
    behind = {k: v for k, v in settings.items() if k != "ssl.ca.pem"}
    return tls, {**behind, "ssl.ca.location": str(files.ca_file)}


def target_of(bootstrap: str | None) -> Target:
    """The embedded broker (None) or the cluster at ``bootstrap``."""
    return (
        fault_registry.EMBEDDED if bootstrap is None else fault_registry.bootstrap_target(bootstrap)
    )


def verify(
    guarantee: Guarantee,
    faults: list[str],
    *,
    orders: int = DEFAULT_ORDERS,
    bootstrap: str | None = None,
    create_topic: CreateTopic | None = None,
    eos_sink: bool = False,
    database_url: str | None = None,
    workdir: Path | None = None,
    progress: Progress | None = None,
    cluster: KafkaCluster | None = None,
    client_settings: Mapping[str, str] | None = None,
) -> Result:
    """Run the order/payment pipeline with ``guarantee`` under ``faults`` and check it.

    ``faults`` are fault names (all in one run); ``["none"]`` or ``[]`` injects nothing
    (a smoke test). Without ``bootstrap`` an embedded broker process is started (the
    only target that faults needing ``broker-process`` accept). ``create_topic`` makes
    a topic on targets without the CreateTopics API (librdkafka's mock cluster).
    ``eos_sink`` (exactly-once only) charges into the exactly-once database sink
    instead of the payments topic; ``database_url`` (postgresql://) puts the pipeline's
    database on PostgreSQL instead of a SQLite file. ``workdir`` keeps the histories,
    logs and database there; by default they go to a temporary directory that is
    removed. ``cluster`` runs the workload on an Apache Kafka cluster the caller started
    (onceflow.testing.KafkaCluster) and lets the cluster faults kill and pause its nodes.
    ``client_settings`` (security.protocol, sasl.*, ssl.*) go to every client of the run;
    over TLS the fault proxy ends TLS on both sides (see ``onceflow.verify.proxy``).
    A run that breaks (a worker hung, a fault could not be set up) comes back
    inconclusive.
    """
    if cluster is not None:
        bootstrap = cluster.bootstrap
    target = target_of(bootstrap) if cluster is None else cluster_target(cluster.size)
    sink = ("postgresql" if database_url else "sqlite") if eos_sink else None
    chosen = fault_registry.parse(faults, target, guarantee) if faults else []
    names = tuple(f.name for f in chosen)
    started = time.monotonic()
    scratch = workdir is None
    root = Path(tempfile.mkdtemp(prefix="onceflow-verify-")) if workdir is None else workdir
    root.mkdir(parents=True, exist_ok=True)
    broker: BrokerProcess | None = None
    proxy: KafkaProxy | None = None
    reader = None
    run: _Run | None = None
    try:
        if bootstrap is None:
            broker = BrokerProcess(root / "broker-data").start()
        direct = bootstrap or broker.bootstrap  # type: ignore[union-attr]
        settings = dict(client_settings or {})
        tls, proxied = proxy_tls(settings, root / "proxy-tls")
        proxy = KafkaProxy(direct, tls=tls).start()
        # The zombie's successor must still have work when the zombie resumes.
        paced = any(
            f.stage in ("live", "zombie") or f.name == "lost-produce-response" for f in chosen
        )
        workload = Workload(
            guarantee, orders, root, proxy.bootstrap, direct, eos_sink=eos_sink,
            database_url=database_url,
            record_delay_ms=RECORD_DELAY_MS if paced else 0.0,
            client_settings=settings, proxied_settings=proxied,
        )  # fmt: skip
        context = FaultContext(proxy, broker, cluster=cluster, workload=workload)
        run = _Run(workload, chosen, context, progress)
        if not chosen:
            run.note("smoke-test", "no fault injected: only the set-up is checked")
        try:
            run.advance("setting up")
            workload.setup(create_topic or admin_create_topic(direct, settings))
            reader = workload.start_reader()
            run.advance("producing orders")
            run.produce()
            run.crash_workers()
            run.advance("processing")
            run.last_worker()
        except RunError as exc:
            first, _, rest = str(exc).partition("\n")
            run.notes += [line for line in rest.splitlines() if line.strip()][-10:]
            empty = Findings()
            return Result(
                guarantee, names, target.name, empty, verdict(guarantee, empty),
                time.monotonic() - started, run.notes,
                inconclusive=[*run.doubts, f"the workload did not finish: {first}"], sink=sink,
            )  # fmt: skip
        run.advance("checking")
        run.missed_faults()
        reader.send_signal(signal.SIGTERM)
        wait(reader, 30)
        workload.finish()
        workload.recorder.close()
        events = history.load_dir(workload.history_dir)
        history.write(root / "history.jsonl", events)
        findings = check(events)
        return Result(
            guarantee, names, target.name, findings, verdict(guarantee, findings),
            time.monotonic() - started, run.notes, events, inconclusive=run.doubts, sink=sink,
        )  # fmt: skip
    finally:
        if run is not None:
            run.kill_others()
        if reader is not None and reader.poll() is None:
            reader.kill()
            reader.wait()
        if proxy is not None:
            proxy.stop()
        if broker is not None:
            broker.stop()
        if scratch:
            shutil.rmtree(root, ignore_errors=True)
