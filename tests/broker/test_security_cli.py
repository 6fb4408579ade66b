"""`onceflow broker --listener ... --tls-self-signed` and `onceflow users` as a user runs
them, with kcat, kafka-python and aiokafka over SASL_SSL."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.helpers import create_ssl_context
from kafka import KafkaConsumer, KafkaProducer

import sasl_ssl_process
from onceflow.testing import BrokerProcess
from sasl_ssl_process import TIMEOUT, ca_file
from sasl_ssl_process import onceflow as _onceflow

PASSWORD = "cli-users-password"


@pytest.fixture(scope="module")
def sasl_ssl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker process whose only listener is SASL_SSL, with a self-signed CA."""
    broker = sasl_ssl_process.start(tmp_path_factory.mktemp("cli-security"))
    yield broker
    broker.stop()


def _add_user(broker: BrokerProcess, name: str, *extra: str) -> None:
    sasl_ssl_process.add_user(broker, name, PASSWORD, *extra)


def _kcat(broker: BrokerProcess, user: str, mechanism: str, *args: str, stdin: str = "") -> Any:
    executable = shutil.which("kcat")
    assert executable, "kcat is not installed: apt-get install -y kcat (.ci/run does this)"
    return subprocess.run(
        [executable, "-b", broker.bootstrap, "-X", "security.protocol=SASL_SSL",
         "-X", f"sasl.mechanism={mechanism}", "-X", f"sasl.username={user}",
         "-X", f"sasl.password={PASSWORD}", "-X", f"ssl.ca.location={ca_file(broker)}", *args],
        input=stdin, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip


def test_users_added_while_the_broker_runs_can_log_in_with_kcat(
    sasl_ssl_broker: BrokerProcess, topic: str
) -> None:
    _add_user(sasl_ssl_broker, "kim")
    listed = _onceflow("users", "list", "--data-dir", str(sasl_ssl_broker.data_dir), "--json")
    assert {(u["user"], u["mechanism"]) for u in json.loads(listed.stdout)} >= {
        ("kim", "SCRAM-SHA-256"), ("kim", "SCRAM-SHA-512")
    }  # fmt: skip
    assert PASSWORD not in (sasl_ssl_broker.data_dir / "users.json").read_text()
    lines = [f"line-{i}" for i in range(20)]
    produced = _kcat(sasl_ssl_broker, "kim", "SCRAM-SHA-512", "-P", "-t", topic,
                     stdin="\n".join(lines) + "\n")  # fmt: skip
    assert produced.returncode == 0, produced.stderr
    consumed = _kcat(sasl_ssl_broker, "kim", "PLAIN", "-C", "-t", topic, "-o", "beginning",
                     "-e", "-q")  # fmt: skip
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.splitlines() == lines

    removed = _onceflow("users", "remove", "kim", "--data-dir", str(sasl_ssl_broker.data_dir))
    assert removed.returncode == 0, removed.stderr
    refused = _kcat(sasl_ssl_broker, "kim", "SCRAM-SHA-256", "-L", "-m", "5")
    assert refused.returncode != 0
    assert "Authentication failed" in refused.stderr


def test_users_cli_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    empty = _onceflow("users", "add", "x", "--data-dir", str(tmp_path), stdin="\n")
    assert empty.returncode == 1
    assert empty.stderr.strip() == "onceflow users add: the password is empty"
    missing = _onceflow("users", "remove", "nobody", "--data-dir", str(tmp_path))
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    few = _onceflow("users", "add", "x", "--iterations", "10", "--data-dir", str(tmp_path))
    assert few.returncode == 1 and "iterations" in few.stderr


def test_broker_refuses_inconsistent_listener_options(tmp_path: Path) -> None:
    cases = [
        ("--listener", "SSL://127.0.0.1:0"),  # TLS without a certificate
        ("--listener", "INTERNAL://127.0.0.1:0"),  # a name with no protocol
        ("--listener", "PLAINTEXT:/127.0.0.1:0"),
        ("--advertised-listener", "PLAINTEXT://h:1"),
        ("--super-user", "User:admin"),  # ACL options without --acls
        ("--acls", "--super-user", "admin"),  # not a principal
    ]
    for args in cases:
        done = _onceflow("broker", "--data-dir", str(tmp_path / "d"), *args)
        assert done.returncode == 2, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
        assert "Traceback" not in done.stderr


MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _kafka_python_settings(broker: BrokerProcess, user: str, mechanism: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": broker.bootstrap,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": user,
        "sasl_plain_password": PASSWORD,
        "ssl_cafile": str(ca_file(broker)),
    }


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_kafka_python_over_sasl_ssl(
    sasl_ssl_broker: BrokerProcess, topic: str, mechanism: str
) -> None:
    _add_user(sasl_ssl_broker, "kp")
    settings = _kafka_python_settings(sasl_ssl_broker, "kp", mechanism)
    producer = KafkaProducer(transactional_id=f"kp-{topic}", **settings)
    producer.init_transactions()
    producer.begin_transaction()
    for i in range(10):
        producer.send(topic, f"kp-{i}".encode())
    producer.commit_transaction()
    producer.close()
    consumer = KafkaConsumer(topic, group_id=f"g-{topic}", auto_offset_reset="earliest",
                             isolation_level="read_committed", consumer_timeout_ms=20_000,
                             **settings)  # fmt: skip
    try:
        got = []
        for message in consumer:
            got.append(message.value)
            if len(got) == 10:
                break
        assert got == [f"kp-{i}".encode() for i in range(10)]
        consumer.commit()
    finally:
        consumer.close()


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_aiokafka_over_sasl_ssl(sasl_ssl_broker: BrokerProcess, topic: str, mechanism: str) -> None:
    _add_user(sasl_ssl_broker, "aio")

    async def round_trip() -> list[bytes]:
        context = create_ssl_context(cafile=str(ca_file(sasl_ssl_broker)))
        settings = {
            "bootstrap_servers": sasl_ssl_broker.bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": mechanism,
            "sasl_plain_username": "aio",
            "sasl_plain_password": PASSWORD,
            "ssl_context": context,
        }
        producer = AIOKafkaProducer(transactional_id=f"aio-{topic}", **settings)
        await producer.start()
        try:
            async with producer.transaction():
                for i in range(10):
                    await producer.send(topic, f"aio-{i}".encode())
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, group_id=f"g-{topic}", auto_offset_reset="earliest",
                                    isolation_level="read_committed", **settings)  # fmt: skip
        await consumer.start()
        try:
            got: list[bytes] = []
            async with asyncio.timeout(TIMEOUT):
                while len(got) < 10:
                    batch = await consumer.getmany(timeout_ms=1000)
                    got += [m.value for records in batch.values() for m in records]
            await consumer.commit()
            return got
        finally:
            await consumer.stop()

    assert asyncio.run(round_trip()) == [f"aio-{i}".encode() for i in range(10)]
