"""``onceflow verify`` through a broker whose only listener is SASL_SSL, with ACLs on
and the verify user the only principal allowed anything: every client of the runs (the
workers behind the fault proxy, the reader and the final reads that connect directly)
must have logged in over TLS as that user for the verdicts to be reached."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer

import sasl_ssl_process
from onceflow.testing import BrokerProcess
from sasl_ssl_process import onceflow as _onceflow

USER, PASSWORD = "verifier", "verifier-password"
OUTSIDER = "outsider"
ORDERS = 120


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = sasl_ssl_process.start(
        tmp_path_factory.mktemp("verify-sasl-ssl"), "--acls", "--super-user", f"User:{USER}"
    )
    for name in (USER, OUTSIDER):
        sasl_ssl_process.add_user(process, name, PASSWORD, "--mechanism", "SCRAM-SHA-512")
    yield process
    process.stop()


def _settings(broker: BrokerProcess, user: str = USER) -> dict[str, str]:
    return sasl_ssl_process.settings(broker, user, PASSWORD)


def test_the_acls_let_only_the_verify_user_write(broker: BrokerProcess, topic: str) -> None:
    # What makes the verify run below meaningful: a logged-in user without ACLs is refused.
    errors: list[KafkaError] = []
    producer = Producer({**_settings(broker, OUTSIDER), "bootstrap.servers": broker.bootstrap,
                         "message.timeout.ms": 10000})  # fmt: skip
    producer.produce(topic, b"x", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(30)
    assert [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]


def test_verify_matrix_passes_over_sasl_ssl(broker: BrokerProcess, tmp_path: Path) -> None:
    config = tmp_path / "client.properties"
    config.write_text("".join(f"{k}={v}\n" for k, v in _settings(broker).items()))
    done = _onceflow(
        "verify", "--bootstrap", broker.bootstrap, "--client-config", str(config),
        "--guarantee", "at-least-once", "--guarantee", "exactly-once",
        "--fault", "producer-crash", "--fault", "crash-mid-transaction",
        "--orders", str(ORDERS), "--json", timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = json.loads(done.stdout)["runs"]
    assert [(r["guarantee"], r["verdict"]) for r in runs] == [
        ("at-least-once", "pass"), ("exactly-once", "pass")
    ]  # fmt: skip
    for run in runs:
        assert run["orders"] == ORDERS and run["lost"] == 0, run
        assert any(n.startswith("producer-crash: producer-1 killed") for n in run["notes"]), run
        assert any("killed at" in n for n in run["notes"]), run["notes"]
    assert runs[1]["duplicated"] == 0
    assert PASSWORD not in done.stdout + done.stderr


def test_verify_refuses_client_settings_without_bootstrap() -> None:
    done = _onceflow("verify", "-X", "security.protocol=SASL_SSL")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "onceflow verify: --client-config and -X need --bootstrap: the embedded broker is PLAINTEXT"
    ]
