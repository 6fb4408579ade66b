"""Black-box mode: the example programs of ``examples/`` under the verifier's faults.

The correct at-least-once and exactly-once loops pass, and so do the Quix Streams and
faust-streaming applications; each deliberately broken one is flagged with the anomaly
its bug makes. ``judge`` (the per-key verdict) is also tested on its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from onceflow.guarantees import Guarantee
from onceflow.kafka_admin import create_topics
from onceflow.testing.postgres import PostgresServer
from onceflow.verify import checker
from onceflow.verify.blackbox import (
    INSTANCE_KILL,
    INSTANCE_PAUSE,
    Program,
    held_back,
    judge,
    query_keys,
    verify_program,
)
from onceflow.verify.checker import verdict
from onceflow.verify.outcome import Outcome
from onceflow.verify.workload import open_database

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
# Quix Streams pins an older confluent-kafka: its own virtualenv (`make test` builds it).
QUIX_PYTHON = REPO / ".venv-quix" / "bin" / "python"
SEED = 7
INPUTS = 200


def example(name: str, instances: int = 2) -> Program:
    command = f"{sys.executable} -u {EXAMPLES / name}.py {{input}} {{output}}"
    return Program(command, "in", "out", instances=instances)


def test_judge_counts_each_input_key() -> None:
    findings = judge(["a", "b", "c"], ["x"], ["a", "b", "b", "x", "stray"])
    assert findings.lost == {"c"} and findings.duplicated == {"b"}
    assert {a.kind: a.subject for a in findings.anomalies} == {
        checker.LOST: "c", checker.DUPLICATE: "b", checker.ABORTED_READ: "x",
        checker.UNEXPLAINED: "stray",
    }  # fmt: skip
    assert not any(verdict(g, findings).ok for g in Guarantee)


def test_judge_holds_each_guarantee_to_its_expectation() -> None:
    lost_one = judge(["a", "b"], [], ["a"])
    twice = judge(["a", "b"], [], ["a", "b", "b"])
    assert verdict(Guarantee.AT_MOST_ONCE, lost_one).ok
    assert not verdict(Guarantee.AT_LEAST_ONCE, lost_one).ok
    assert verdict(Guarantee.AT_LEAST_ONCE, twice).ok
    assert not verdict(Guarantee.EXACTLY_ONCE, twice).ok
    assert verdict(Guarantee.EXACTLY_ONCE, judge(["a", "b"], [], ["b", "a"])).ok


def test_judge_applies_the_database_rows_too() -> None:
    findings = judge(["a", "b"], [], ["a", "b"], applied_keys=["a", "a"])
    assert findings.count(checker.DUPLICATE_APPLICATION) == 1 and findings.lost == {"b"}


def test_correct_at_least_once_loop_passes_every_fault(tmp_path: Path) -> None:
    # Through the command line: seed printed, --json, exit status.
    done = subprocess.run(
        [
            sys.executable, "-m", "onceflow", "verify", "--guarantee", "at-least-once",
            "--command", example("kafka_at_least_once").command, "--input", "in",
            "--output", "out", "--instances", "2", "--seed", str(SEED), "--inputs",
            str(INPUTS), "--kills", "3", "--json",
        ],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert f"seed {SEED}" in done.stderr
    (run,) = json.loads(done.stdout)["runs"]
    assert done.returncode == 0, (run["inconclusive"], run["notes"], run["examples"])
    assert run["verdict"] == "pass" and run["lost"] == 0 and run["orders"] == INPUTS
    faults = " ".join(run["faults"])
    for fault in (INSTANCE_KILL, INSTANCE_PAUSE, "broker-kill", "network-cut"):
        assert fault in faults


def test_correct_exactly_once_loop_passes(tmp_path: Path) -> None:
    # One instance and no network faults: with two instances, or after a cut, the plain
    # loop can block in send_offsets_to_transaction past its timeout (the embedded
    # broker answers TxnOffsetCommit REBALANCE_IN_PROGRESS while the group completes a
    # rebalance, which Kafka does not; librdkafka retries it while the loop cannot
    # rejoin). The verifier reports that as inconclusive: the program did not finish.
    # (Lost produce responses are left out too: one instance's few produce requests
    # may all pass before the fault is armed, which makes the run inconclusive.)
    result = verify_program(
        example("kafka_exactly_once", instances=1), Guarantee.EXACTLY_ONCE, seed=SEED,
        inputs=INPUTS, kills=3, workdir=tmp_path,
        faults=[INSTANCE_KILL, INSTANCE_PAUSE, "broker-kill"],
    )  # fmt: skip
    assert result.outcome is Outcome.PASS, result.to_json()
    assert result.findings.lost == set() and result.findings.duplicated == set()
    assert result.findings.orders == INPUTS


def test_a_fault_armed_last_lands_while_the_program_finishes(tmp_path: Path) -> None:
    # Seed 1 kills the one instance, then arms lost produce responses in the last round:
    # the restarted Faust instance (seconds to start) writes nothing before every input
    # is written, so the fault lands only while the verifier waits for the output.
    result = verify_program(
        example("faust_at_least_once", instances=1), Guarantee.AT_LEAST_ONCE, seed=1,
        inputs=INPUTS, kills=1, workdir=tmp_path,
        faults=[INSTANCE_KILL, "lost-produce-response"],
    )  # fmt: skip
    assert result.notes[-1].startswith("round 2: lost-produce-response"), result.notes
    assert result.outcome is Outcome.PASS, result.to_json()


def test_quix_streams_exactly_once_app_passes(tmp_path: Path) -> None:
    assert QUIX_PYTHON.exists(), f"{QUIX_PYTHON} is missing: make .venv-quix/.installed"
    command = f"{QUIX_PYTHON} -u {EXAMPLES / 'quix_exactly_once.py'} {{input}} {{output}}"
    # One instance: with two, Quix Streams dies when send_offsets_to_transaction meets
    # ILLEGAL_GENERATION in a rebalance (it leaves recovery to a restart), which the
    # verifier rightly calls inconclusive. Lost produce responses are left out: Quix
    # Streams batches its few produce requests, so the fault may find none to strike.
    result = verify_program(
        Program(command, "in", "out", instances=1), Guarantee.EXACTLY_ONCE, seed=SEED,
        inputs=INPUTS, kills=3, workdir=tmp_path,
        faults=[INSTANCE_KILL, INSTANCE_PAUSE, "network-cut", "broker-kill"],
    )  # fmt: skip
    assert result.outcome is Outcome.PASS, result.to_json()
    assert result.findings.lost == set() and result.findings.duplicated == set()
    assert result.findings.orders == INPUTS
    assert len(result.notes) == 1 + 3 + 3, result.notes  # the seed, 3 kills, 3 faults


def test_faust_at_least_once_app_passes(tmp_path: Path) -> None:
    # Two instances under every black-box fault: Faust (aiokafka underneath) rejoins
    # after kills, the pause, the broker's restart and the network faults by itself.
    # This seed restarts no instance just before the broker kill or the cut: a Faust
    # instance starting while the broker is unreachable exits (see the example).
    result = verify_program(
        example("faust_at_least_once"), Guarantee.AT_LEAST_ONCE, seed=SEED, inputs=INPUTS,
        kills=3, workdir=tmp_path,
        faults=[INSTANCE_KILL, INSTANCE_PAUSE, "lost-produce-response", "network-cut",
                "broker-kill"],
    )  # fmt: skip
    assert result.outcome is Outcome.PASS, result.to_json()
    assert result.findings.lost == set() and result.findings.orders == INPUTS
    # The seed, 3 kills and the 4 other faults, each landed (or the run is inconclusive).
    assert len(result.notes) == 1 + 3 + 4, result.notes


@pytest.mark.parametrize(
    ("name", "guarantee", "anomaly"),
    [
        ("broken_commit_before_flush", Guarantee.AT_LEAST_ONCE, checker.LOST),
        ("broken_idempotent_instead_of_transaction", Guarantee.EXACTLY_ONCE, checker.DUPLICATE),
        ("broken_transactions_read_uncommitted", Guarantee.EXACTLY_ONCE, checker.ABORTED_READ),
    ],
)
def test_broken_loops_are_flagged(
    name: str, guarantee: Guarantee, anomaly: str, tmp_path: Path
) -> None:
    result = verify_program(
        example(name), guarantee, seed=SEED, inputs=INPUTS, kills=4, faults=[INSTANCE_KILL],
        workdir=tmp_path,
    )  # fmt: skip
    assert result.outcome is Outcome.FAIL, result.to_json()
    assert anomaly in result.verdict.violations, result.to_json()


def test_an_open_transaction_holds_the_output_back(onceflow_broker: Any) -> None:
    # What the verifier waits out before its final read: read_committed readers end at
    # the LSO, so outputs behind an open transaction would look lost.
    bootstrap = onceflow_broker.bootstrap
    create_topics(bootstrap, "held", partitions=2)
    plain = Producer({"bootstrap.servers": bootstrap})
    txn = Producer({"bootstrap.servers": bootstrap, "transactional.id": "held-back"})
    txn.init_transactions(30)
    txn.begin_transaction()
    txn.produce("held", b"open", partition=1)
    assert txn.flush(30) == 0
    for partition in (0, 1):
        plain.produce("held", b"committed", partition=partition)
    assert plain.flush(30) == 0
    assert held_back(bootstrap, "held") == {1: (0, 2)}
    txn.abort_transaction(30)
    assert held_back(bootstrap, "held") == {}


def test_sql_keys_are_read_from_sqlite_and_postgresql(tmp_path: Path) -> None:
    sqlite_file = tmp_path / "applied.db"
    server = PostgresServer.create().start()
    try:
        for location in (str(sqlite_file), server.new_database()):
            database = open_database(location)
            database.execute("CREATE TABLE applied (input_key TEXT)")
            for key in ("a", "a", "b"):
                database.execute(f"INSERT INTO applied VALUES ({database.placeholder})", (key,))
            database.close()
            applied = query_keys("SELECT input_key FROM applied", location)
            assert sorted(applied) == ["a", "a", "b"]
            findings = judge(["a", "b", "c"], [], ["a", "b", "c"], applied_keys=applied)
            assert findings.count(checker.DUPLICATE_APPLICATION) == 1
            assert findings.lost == {"c"}  # never applied in the database
    finally:
        server.stop()
