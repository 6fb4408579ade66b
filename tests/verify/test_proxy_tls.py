"""The fault proxy in front of a SASL_SSL listener: it ends TLS on both sides, so it can
still read frames and lose a Produce response, while SASL passes through to the broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer

import sasl_ssl_process
from onceflow.broker.security.tls import make_authority
from onceflow.testing import BrokerProcess
from onceflow.verify.proxy import PRODUCE, KafkaProxy
from onceflow.verify.run import proxy_tls
from onceflow.verify.workload import read_all

USER, PASSWORD = "through-proxy", "proxy-password"


def _broker(root: Path) -> BrokerProcess:
    broker = sasl_ssl_process.start(root)
    sasl_ssl_process.add_user(broker, USER, PASSWORD, "--mechanism", "SCRAM-SHA-256")
    return broker


def _settings(broker: BrokerProcess, password: str = PASSWORD) -> dict[str, str]:
    return sasl_ssl_process.settings(broker, USER, password, "SCRAM-SHA-256")


def test_proxy_loses_a_produce_response_inside_tls(tmp_path: Path, topic: str) -> None:
    broker = _broker(tmp_path)
    try:
        settings = _settings(broker)
        tls, proxied = proxy_tls(settings, tmp_path / "proxy-tls")
        assert tls is not None
        # Behind the proxy, clients trust its CA, not the broker's.
        assert proxied["ssl.ca.location"] == str(tmp_path / "proxy-tls" / "ca.pem")
        with KafkaProxy(broker.bootstrap, tls=tls) as proxy:
            proxy.lose_responses(PRODUCE, count=1)
            producer = Producer({**proxied, "bootstrap.servers": proxy.bootstrap,
                                 "enable.idempotence": True, "retry.backoff.ms": 50})  # fmt: skip
            acked: list[object] = []
            producer.produce(topic, b"once", on_delivery=lambda err, _m: acked.append(err))
            assert producer.flush(30) == 0
            assert proxy.stats[f"lost:{PRODUCE}"] == 1
        assert acked == [None]
        rows = read_all(broker.bootstrap, topic, "read_uncommitted", client_settings=settings)
        assert [r[3] for r in rows] == ["once"]
    finally:
        broker.stop()


def test_sasl_through_the_proxy_is_checked_by_the_broker(tmp_path: Path, topic: str) -> None:
    broker = _broker(tmp_path)
    try:
        tls, proxied = proxy_tls(_settings(broker, "wrong"), tmp_path / "proxy-tls")
        with KafkaProxy(broker.bootstrap, tls=tls) as proxy:
            errors: list[KafkaError] = []
            producer = Producer({**proxied, "bootstrap.servers": proxy.bootstrap,
                                 "error_cb": errors.append})  # fmt: skip
            for _ in range(100):  # bounded: the refusal arrives within a few polls
                producer.poll(0.1)
                if errors:
                    break
        assert errors and errors[0].code() == KafkaError._AUTHENTICATION, errors
    finally:
        broker.stop()


def test_plaintext_settings_need_no_proxy_tls(tmp_path: Path) -> None:
    settings = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN"}
    assert proxy_tls(settings, tmp_path) == (None, settings)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_tls_settings_get_a_proxy_certificate(tmp_path: Path, protocol: str) -> None:
    ca = make_authority("the cluster's CA").pem().decode()
    tls, proxied = proxy_tls({"security.protocol": protocol, "ssl.ca.pem": ca}, tmp_path)
    assert tls is not None and Path(proxied["ssl.ca.location"]).is_file()
    # The clients behind the proxy trust only its CA; the proxy trusts the cluster's.
    assert "ssl.ca.pem" not in proxied
    assert [c["subject"] for c in tls.client.get_ca_certs()] == [
        ((("organizationName", "onceflow"),), (("commonName", "the cluster's CA"),))
    ]
