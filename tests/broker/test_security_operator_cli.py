"""``onceflow topics|groups|transactions`` over a broker whose only listener is SASL_SSL:
the settings come from ``--client-config FILE`` or ``-X KEY=VALUE``, reach librdkafka's
AdminClient and the raw wire connections (TLS, then SaslHandshake + SaslAuthenticate),
and a wrong password is one readable line and a non-zero exit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

import sasl_ssl_process
from onceflow.testing import BrokerProcess
from sasl_ssl_process import onceflow as _onceflow

USER, PASSWORD = "operator", "operator-secret-password"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker process with one listener, SASL_SSL, a self-signed CA and one user."""
    process = sasl_ssl_process.start(tmp_path_factory.mktemp("operator-sasl-ssl"))
    sasl_ssl_process.add_user(process, USER, PASSWORD)
    yield process
    process.stop()


def _settings(broker: BrokerProcess, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
    return sasl_ssl_process.settings(broker, USER, PASSWORD, mechanism)


@pytest.fixture(scope="module")
def config_file(broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The settings as a Java-client style properties file (a jaas line for the login)."""
    path = tmp_path_factory.mktemp("client-config") / "client.properties"
    settings = _settings(broker)
    path.write_text(
        "# as kafka-topics --command-config reads it\n"
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{USER}" password="{PASSWORD}";\n'
        f"ssl.ca.location = {settings['ssl.ca.location']}\n"
    )
    return path


def _ok(broker: BrokerProcess, *args: str) -> Any:
    done = _onceflow(*args, "--bootstrap", broker.bootstrap, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _x(settings: dict[str, str]) -> list[str]:
    return [arg for key, value in settings.items() for arg in ("-X", f"{key}={value}")]


def test_topics_create_list_describe_with_a_client_config_file(
    broker: BrokerProcess, config_file: Path, topic: str
) -> None:
    created = _ok(broker, "topics", "create", topic, "--partitions", "3",
                  "--client-config", str(config_file))  # fmt: skip
    assert created["partitions"] == 3
    listed = _ok(broker, "topics", "list", "--client-config", str(config_file))
    assert {t["name"]: t["partitions"] for t in listed}[topic] == 3
    detail = _ok(broker, "topics", "describe", topic, "--client-config", str(config_file))
    assert [p["partition"] for p in detail["partitions"]] == [0, 1, 2]


def test_groups_describe_shows_offsets_committed_over_sasl_ssl(
    broker: BrokerProcess, topic: str
) -> None:
    settings = _settings(broker, "SCRAM-SHA-256")
    client = {**settings, "bootstrap.servers": broker.bootstrap}
    producer = Producer(client)
    for i in range(5):
        producer.produce(topic, value=f"v{i}".encode())
    assert producer.flush(sasl_ssl_process.TIMEOUT) == 0
    group = f"{topic}-group"
    consumer = Consumer({**client, "group.id": group, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen = 0
    for _ in range(100):  # bounded: five records arrive within a few polls
        message = consumer.poll(0.5)
        seen += message is not None and message.error() is None
        if seen == 5:
            break
    consumer.commit(asynchronous=False)
    consumer.close()
    detail = _ok(broker, "groups", "describe", group, *_x(settings))
    assert [(o["topic"], o["committed"], o["end"]) for o in detail["offsets"]] == [(topic, 5, 5)]


def test_transactions_list_and_describe_use_the_raw_wire_over_sasl_ssl(
    broker: BrokerProcess, topic: str
) -> None:
    settings = _settings(broker, "PLAIN")
    tid = f"{topic}-tid"
    producer = Producer({**settings, "bootstrap.servers": broker.bootstrap,
                         "transactional.id": tid})  # fmt: skip
    producer.init_transactions(sasl_ssl_process.TIMEOUT)
    producer.begin_transaction()
    producer.produce(topic, value=b"left open")
    assert producer.flush(sasl_ssl_process.TIMEOUT) == 0
    try:
        found = _ok(broker, "transactions", "list", "--topic", topic, *_x(settings))
        assert [(t["topic"], t["transactional_id"]) for t in found] == [(topic, tid)]
        detail = _ok(broker, "transactions", "describe", tid, *_x(settings))
        assert detail["state"] == "Ongoing"
        assert [tuple(p) for p in detail["partitions"]] == [(topic, 0)]
    finally:
        producer.abort_transaction(sasl_ssl_process.TIMEOUT)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_a_wrong_password_is_one_line_and_a_failure(broker: BrokerProcess, mechanism: str) -> None:
    wrong = _settings(broker, mechanism) | {"sasl.password": "not-the-password"}
    done = _onceflow("topics", "list", "--bootstrap", broker.bootstrap, *_x(wrong))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Authentication failed" in lines[0] and f"as {USER}" in lines[0]
    assert "not-the-password" not in done.stderr + done.stdout


def test_no_settings_against_a_sasl_ssl_listener_fails_in_one_line(broker: BrokerProcess) -> None:
    done = _onceflow("groups", "list", "--bootstrap", broker.bootstrap, "--timeout", "5")
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_an_unreadable_client_config_is_one_line(broker: BrokerProcess, tmp_path: Path) -> None:
    done = _onceflow("topics", "list", "--bootstrap", broker.bootstrap,
                     "--client-config", str(tmp_path / "missing.properties"))  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"onceflow topics: cannot read client config {tmp_path / 'missing.properties'}: "
        "No such file or directory"
    ]
