"""The runner over SASL_SSL: ``client_settings`` reach its consumer and producers (the
broker has no other listener), and cannot weaken the guarantee."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

import sasl_ssl_process
from onceflow import Guarantee
from onceflow.client_logging import client_config
from onceflow.examples.orders import build_runner, ledger, make_orders
from onceflow.guarantees import GuaranteeConfigError
from onceflow.kafka_admin import create_topics
from onceflow.processing import Runner, SqliteDatabase
from onceflow.testing import BrokerProcess
from onceflow.verify.workload import read_all

USER, PASSWORD = "pipeline", "pipeline-password"
ORDERS = 60


@pytest.fixture(scope="module")
def sasl_ssl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess, dict]]:
    """A broker whose only listener is SASL_SSL, and the settings its clients need."""
    root = tmp_path_factory.mktemp("runner-sasl-ssl")
    broker = sasl_ssl_process.start(root, "--default-partitions", "2")
    sasl_ssl_process.add_user(broker, USER, PASSWORD)
    yield broker, sasl_ssl_process.settings(broker, USER, PASSWORD)
    broker.stop()


@pytest.mark.parametrize("guarantee", [Guarantee.AT_LEAST_ONCE, Guarantee.EXACTLY_ONCE])
def test_pipeline_runs_over_sasl_ssl_with_client_settings(
    sasl_ssl: tuple[BrokerProcess, dict], guarantee: Guarantee, tmp_path: Path, topic: str
) -> None:
    broker, settings = sasl_ssl
    source, payments = f"{topic}.orders", f"{topic}.payments"
    create_topics(broker.bootstrap, source, payments, client_settings=settings)
    producer = Producer(client_config({"bootstrap.servers": broker.bootstrap}, settings))
    orders = make_orders(ORDERS)
    for order in orders:
        producer.produce(source, key=order.customer.encode(), value=order.encode())
    assert producer.flush(30) == 0
    db = SqliteDatabase(tmp_path / "charges.db")
    runner = build_runner(
        broker.bootstrap, guarantee, db, group=f"{topic}.g", payments_topic=payments,
        source=source, client_settings=settings,
        producer_overrides={"transaction.timeout.ms": 10000}
        if guarantee is Guarantee.EXACTLY_ONCE else {},
    )  # fmt: skip
    stats = runner.run(idle_timeout=1.5, max_seconds=60)
    assert stats.processed == ORDERS
    assert set(ledger(db)) == {o.order_id for o in orders}
    paid = read_all(broker.bootstrap, payments, "read_committed", client_settings=settings)
    assert len(paid) == ORDERS


def test_client_settings_cannot_weaken_the_guarantee() -> None:
    def runner(guarantee: Guarantee, settings: dict[str, str]) -> Runner:
        return Runner(bootstrap="127.0.0.1:1", source="s", group="g", process=lambda r: [],
                      guarantee=guarantee, client_settings=settings)  # fmt: skip

    with pytest.raises(GuaranteeConfigError, match=r"enable\.idempotence"):
        runner(Guarantee.EXACTLY_ONCE, {"enable.idempotence": "false"})
    with pytest.raises(GuaranteeConfigError, match=r"enable\.auto\.commit"):
        runner(Guarantee.AT_LEAST_ONCE, {"enable.auto.commit": "true"})
    kept = runner(Guarantee.AT_LEAST_ONCE, {"security.protocol": "SASL_SSL", "acks": "all"})
    assert kept.consumer_settings["security.protocol"] == "SASL_SSL"
    assert kept.producer_settings is not None
    assert kept.producer_settings["security.protocol"] == "SASL_SSL"
