"""A broker that does not fence (the unfencing proxy in front of a real broker), and the
verifier failing a run on it: a zombie's writes become visible after its successor took
over its transactional id."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaException, Producer

from onceflow.testing import BrokerProcess
from onceflow.verify import checker
from onceflow.verify.proxy import KafkaProxy
from onceflow.verify.unfenced import unfenced_broker
from onceflow.verify.workload import read_all

SECONDS = 30.0


@pytest.fixture
def unfenced(onceflow_broker_process: BrokerProcess) -> Iterator[KafkaProxy]:
    proxy = unfenced_broker(onceflow_broker_process.bootstrap)
    yield proxy
    proxy.stop()


def transactional(bootstrap: str, transactional_id: str) -> Producer:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id})
    producer.init_transactions(SECONDS)
    return producer


def old_producer_commits_after_a_new_one_started(bootstrap: str, topic: str) -> None:
    """The old producer of ``txn`` writes, a new one initialises ``txn``, then the old
    one commits (raises KafkaException if fenced)."""
    old = transactional(bootstrap, f"{topic}-txn")
    old.begin_transaction()
    old.produce(topic, b"from the old producer")
    assert old.flush(SECONDS) == 0
    transactional(bootstrap, f"{topic}-txn")
    old.commit_transaction(SECONDS)


def test_a_correct_broker_fences_the_old_producer(onceflow_broker_process: BrokerProcess) -> None:
    bootstrap = onceflow_broker_process.bootstrap
    with pytest.raises(KafkaException, match="fenced"):
        old_producer_commits_after_a_new_one_started(bootstrap, "fenced")
    assert read_all(bootstrap, "fenced", "read_committed") == []


def test_the_unfenced_broker_lets_the_old_producer_commit(
    unfenced: KafkaProxy, onceflow_broker_process: BrokerProcess
) -> None:
    old_producer_commits_after_a_new_one_started(unfenced.bootstrap, "unfenced")
    rows = read_all(onceflow_broker_process.bootstrap, "unfenced", "read_committed")
    assert [row[3] for row in rows] == ["from the old producer"]
    assert unfenced.rewriter.stats["incarnations"] == 2  # type: ignore[union-attr]


def test_verify_fails_a_broker_that_shows_a_fenced_producers_writes(
    unfenced: KafkaProxy,
) -> None:
    # The zombie resumes after a restart of its instance took over its transactional
    # id; this broker lets it commit, so its payments become visible.
    done = subprocess.run(
        [
            sys.executable, "-m", "onceflow", "verify", "--guarantee", "exactly-once",
            "--fault", "zombie", "--orders", "200", "--bootstrap", unfenced.bootstrap,
            "--json",
        ],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = json.loads(done.stdout)["runs"]
    assert run["verdict"] == "fail", run
    assert run["anomalies"][checker.FENCED_WRITE] > 0, run
    assert checker.FENCED_WRITE in run["violations"], run
    # What the zombie's committed transactions did: orders paid twice.
    assert run["duplicated"] > 0 and run["lost"] == 0, run
