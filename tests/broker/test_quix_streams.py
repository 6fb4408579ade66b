"""A stateful Quix Streams application on the embedded broker.

Quix Streams creates its output topic and a compacted changelog topic for its state
through the admin API, and after losing its local state it rebuilds it from that
changelog. The app runs from its own virtualenv (``make test`` builds ``.venv-quix``)
because quixstreams pins an older confluent-kafka than the rest of the suite tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from onceflow.testing import BrokerProcess

REPO = Path(__file__).resolve().parents[2]
QUIX_PYTHON = REPO / ".venv-quix" / "bin" / "python"
APP = Path(__file__).with_name("quix_counter_app.py")
CHANGELOG = "changelog__quix-counter--clicks--default"
TIMEOUT = 30


def run_app(bootstrap: str, state_dir: Path, records: int) -> None:
    assert QUIX_PYTHON.exists(), f"{QUIX_PYTHON} is missing: `make test` builds it"
    done = subprocess.run(
        [str(QUIX_PYTHON), str(APP), bootstrap, str(state_dir), str(records)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def send_clicks(bootstrap: str, clicks: list[tuple[str, int]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for user, n in clicks:
        producer.produce("clicks", key=user, value=json.dumps({"user": user, "n": n}))
    assert producer.flush(TIMEOUT) == 0


def last_totals(bootstrap: str, expected_records: int) -> dict[str, int]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "check", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition("click-totals", 0, 0)])
    totals: dict[str, int] = {}
    seen = 0
    try:
        for _ in range(50):
            for message in consumer.consume(100, 0.5):
                assert not message.error(), message.error()
                value = json.loads(message.value())
                totals[value["user"]] = value["total"]
                seen += 1
            if seen >= expected_records:
                break
    finally:
        consumer.close()
    assert seen == expected_records
    return totals


def test_stateful_quix_app_recovers_its_state_from_the_changelog(
    onceflow_broker_process: BrokerProcess, tmp_path: Path
) -> None:
    broker = onceflow_broker_process
    state_dir = tmp_path / "quix-state"
    first = [(f"user-{i % 3}", i) for i in range(20)]
    send_clicks(broker.bootstrap, first)
    run_app(broker.bootstrap, state_dir, len(first))

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, CHANGELOG)
    described = admin.describe_configs([resource])[resource].result(TIMEOUT)
    assert described["cleanup.policy"].value == "compact"

    # Lose the app's local state and crash the broker: the state must come back from
    # the changelog topic, and the running totals continue where they were.
    shutil.rmtree(state_dir)
    broker.kill()
    broker.start()
    second = [(f"user-{i % 3}", 100 + i) for i in range(10)]
    send_clicks(broker.bootstrap, second)
    run_app(broker.bootstrap, state_dir, len(second))

    expected: dict[str, int] = {}
    for user, n in first + second:
        expected[user] = expected.get(user, 0) + n
    assert last_totals(broker.bootstrap, len(first) + len(second)) == expected
