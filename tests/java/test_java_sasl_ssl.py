"""Apache Kafka's Java client over ``onceflow broker``'s SASL_SSL listener (its only one):
a Java client config file (sasl.jaas.config with SCRAM, a PEM truststore) for an
idempotent producer, then a transactional consume-process-produce loop in a group."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import sasl_ssl_process
from onceflow.kafka_admin import create_topics
from onceflow.testing import BrokerProcess
from onceflow.verify.workload import read_all

from .java_programs import JavaProgram

pytestmark = pytest.mark.java

USER, PASSWORD = "java-app", "java-app-password"
COUNT = 60


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = sasl_ssl_process.start(tmp_path_factory.mktemp("java-sasl-ssl"))
    sasl_ssl_process.add_user(process, USER, PASSWORD)
    yield process
    process.stop()


def _java_config(broker: BrokerProcess, path: Path, mechanism: str) -> Path:
    path.write_text(
        "security.protocol=SASL_SSL\n"
        f"sasl.mechanism={mechanism}\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{USER}" password="{PASSWORD}";\n'
        "ssl.truststore.type=PEM\n"
        f"ssl.truststore.location={sasl_ssl_process.ca_file(broker)}\n"
    )
    return path


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_java_producer_and_transactional_loop_over_sasl_ssl(
    broker: BrokerProcess,
    java: Callable[..., JavaProgram],
    tmp_path: Path,
    topic: str,
    mechanism: str,
) -> None:
    settings = sasl_ssl_process.settings(broker, USER, PASSWORD, mechanism)
    config = str(_java_config(broker, tmp_path / "java.properties", mechanism))
    source, output = f"{topic}-in", f"{topic}-out"
    create_topics(broker.bootstrap, source, output, partitions=2, client_settings=settings)
    produced = java("IdempotentProducer", "--bootstrap", broker.bootstrap, "--topic", source,
                    "--count", str(COUNT), "--client-config", config).finish()  # fmt: skip
    assert produced[-1] == {"event": "done", "count": COUNT, "failures": 0}
    loop = java(
        "TransactionalLoop", "--bootstrap", broker.bootstrap, "--input", source,
        "--output", output, "--group", f"{topic}-group", "--transactional-id", f"{topic}-tx",
        "--client-config", config,
    ).finish()  # fmt: skip
    assert loop[-1] == {"event": "done", "sent": COUNT}
    assert not [e for e in loop if e["event"] in ("fenced", "aborted")]
    rows = read_all(broker.bootstrap, output, "read_committed", client_settings=settings,
                    row=lambda m: m.value().decode())  # fmt: skip
    assert sorted(rows) == sorted(f"paid:value-{i}" for i in range(COUNT))


def test_java_client_with_a_wrong_password_is_refused(
    broker: BrokerProcess, java: Callable[..., JavaProgram], tmp_path: Path, topic: str
) -> None:
    config = _java_config(broker, tmp_path / "java.properties", "SCRAM-SHA-512")
    config.write_text(config.read_text().replace(PASSWORD, "not-the-password"))
    program = java("IdempotentProducer", "--bootstrap", broker.bootstrap, "--topic", topic,
                   "--count", "1", "--client-config", str(config))  # fmt: skip
    failed = program.wait_for("failed")
    assert "SaslAuthenticationException" in failed["error"], failed
    assert program.process.wait(60) == 1
