"""The fault proxy in front of a real broker process: clients stay behind it after
bootstrap, and a lost Produce response makes a non-idempotent producer append twice."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from onceflow.testing import BrokerProcess
from onceflow.verify.proxy import PRODUCE, KafkaProxy
from onceflow.verify.workload import read_all


@pytest.mark.parametrize(("idempotent", "copies"), [(False, 2), (True, 1)])
def test_lost_produce_response_is_retried(
    onceflow_broker_process: BrokerProcess, idempotent: bool, copies: int
) -> None:
    broker = onceflow_broker_process
    topic = f"lost-response-{idempotent}"
    with KafkaProxy(broker.bootstrap) as proxy:
        proxy.lose_responses(PRODUCE, count=1)
        producer = Producer(
            {
                "bootstrap.servers": proxy.bootstrap,
                "enable.idempotence": idempotent,
                "acks": "all",
                "retries": 5,
                "retry.backoff.ms": 50,
            }
        )
        acked: list[object] = []
        producer.produce(topic, b"once", on_delivery=lambda err, _m: acked.append(err))
        assert producer.flush(30) == 0
        # The response was lost in the proxy, so the client went through it (the broker
        # address in Metadata was rewritten) and retried on a new connection.
        assert proxy.stats[f"lost:{PRODUCE}"] == 1
    assert acked == [None]
    rows = read_all(broker.bootstrap, topic, "read_uncommitted")
    assert [r[3] for r in rows] == ["once"] * copies
