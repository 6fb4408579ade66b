"""``onceflow topics|groups|transactions`` against a real broker process, with real
clients making the state they report: every table and JSON value is checked against
what was produced, committed, deleted or left open."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from interop_support import (
    confluent_consumer,
    consume_confluent,
    make_records,
    produce_confluent,
    wait_until,
)

from onceflow.cli import main
from onceflow.testing import BrokerProcess

TIMEOUT = 15.0
HANGING_SCRIPT = Path(__file__).with_name("hanging_txn_producer.py")
WIDTH = 80


class Cli:
    """Runs ``onceflow ...`` in this process against one broker; captures the output."""

    def __init__(self, bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.bootstrap = bootstrap
        self.capsys = capsys

    def run(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main([*args, "--bootstrap", self.bootstrap])
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *args: str) -> str:
        code, out, err = self.run(*args)
        assert code == 0, f"onceflow {' '.join(args)} failed: {err}"
        assert max((len(line) for line in out.splitlines()), default=0) <= WIDTH, out
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def fails(self, *args: str) -> str:
        """The one-line error of a command that must fail."""
        code, out, err = self.run(*args)
        assert code == 1, (code, out, err)
        assert len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err
        return err.strip()


@pytest.fixture
def cli(shared_broker: BrokerProcess, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(shared_broker.bootstrap, capsys)


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A short topic name per test, so that table cells are not wrapped at 80 columns."""
    return "ops-" + request.node.name.removeprefix("test_")[:8]


def rows(table: str) -> list[list[str]]:
    """The body cells of every rich table in ``table`` (box-drawing borders removed)."""
    return [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in table.splitlines()
        if line.startswith("│")
    ]


def produce_values(bootstrap: str, topic: str, partition: int, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    errors: list[Any] = []
    for value in values:
        producer.produce(
            topic, value=value, partition=partition, on_delivery=lambda e, m: errors.append(e)
        )
    assert producer.flush(TIMEOUT) == 0
    assert errors == [None] * len(values), errors


# -- topics ------------------------------------------------------------------------


def test_topics_create_describe_config_delete(
    cli: Cli, shared_broker: BrokerProcess, topic: str
) -> None:
    out = cli.ok("topics", "create", topic, "--partitions", "2", "--config", "retention.ms=3600000")
    assert out.strip() == f"created topic {topic} with 2 partition(s)"
    produce_confluent(
        Producer({"bootstrap.servers": cli.bootstrap}), topic, make_records(7, tag="p0")
    )
    produce_confluent(
        Producer({"bootstrap.servers": cli.bootstrap}),
        topic,
        make_records(3, tag="p1"),
        partition=1,
    )
    admin = AdminClient({"bootstrap.servers": cli.bootstrap})
    (deleted,) = admin.delete_records([TopicPartition(topic, 0, 2)]).values()
    assert deleted.result(TIMEOUT).low_watermark == 2

    listed = cli.json("topics", "list")
    assert {"name": topic, "partitions": 2, "replication_factor": 1} in listed
    assert [topic, "2", "1"] in rows(cli.ok("topics", "list"))

    described = cli.json("topics", "describe", topic)
    on_disk = sum(f.stat().st_size for f in (shared_broker.data_dir / f"{topic}-0").glob("*.log"))
    first, second = described["partitions"]
    assert (first["log_start"], first["high_watermark"], first["last_stable"]) == (2, 7, 7)
    assert first["size"] == on_disk > 0
    assert (second["log_start"], second["high_watermark"], second["last_stable"]) == (0, 3, 3)
    assert (first["leader"], first["replicas"], first["isr"]) == (0, [0], [0])
    assert described["configs"] == {"retention.ms": "3600000"}

    table = cli.ok("topics", "describe", topic)
    body = rows(table)
    assert body[0][:6] == ["0", "0", "0", "2", "7", "7"]
    assert body[1][:6] == ["1", "0", "0", "0", "3", "3"]
    assert ["retention.ms", "3600000"] in body

    changed = {
        c["name"]: c for c in cli.json("topics", "config", topic, "--set", "retention.ms=5000")
    }
    assert changed["retention.ms"]["value"] == "5000"
    assert changed["retention.ms"]["source"] == "DYNAMIC_TOPIC_CONFIG"
    assert ["retention.ms", "5000", "dynamic_topic_config"] in rows(
        cli.ok("topics", "config", topic)
    )
    reverted = {
        c["name"]: c for c in cli.json("topics", "config", topic, "--delete", "retention.ms")
    }
    assert reverted["retention.ms"]["source"] != "DYNAMIC_TOPIC_CONFIG"
    assert reverted["retention.ms"]["value"] != "5000"

    assert cli.ok("topics", "delete", topic).strip() == f"deleted topic {topic}"
    assert topic not in {t["name"] for t in cli.json("topics", "list")}
    assert cli.fails("topics", "describe", topic) == f"onceflow topics: unknown topic {topic!r}"


def test_bad_input_is_one_line(cli: Cli) -> None:
    assert "must be KEY=VALUE" in cli.fails("topics", "create", "x-bad", "--config", "novalue")
    assert cli.fails("groups", "describe", "no-such-group").startswith("onceflow groups: ")
    assert "unknown transactional id" in cli.fails("transactions", "describe", "nobody")
    port = closed_port()
    code = main(["topics", "list", "--bootstrap", f"127.0.0.1:{port}"])
    err = cli.capsys.readouterr().err.strip()
    assert code == 1
    assert err == f"onceflow topics: cannot reach a broker at 127.0.0.1:{port}: Connection refused"


def closed_port() -> int:
    """A port nothing listens on: bound to find a free one, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- groups ------------------------------------------------------------------------


@pytest.fixture
def member(cli: Cli, topic: str) -> Iterator[Consumer]:
    """A live group member that consumed 5 records per partition and committed 3 and 2."""
    cli.ok("topics", "create", topic, "--partitions", "2")
    for partition in (0, 1):
        produce_values(cli.bootstrap, topic, partition, [b"v%d" % i for i in range(5)])
    consumer = Consumer(
        {
            "bootstrap.servers": cli.bootstrap,
            "group.id": f"{topic}-group",
            "client.id": "ops-test-consumer",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    seen: list[Any] = []

    def consumed_all() -> bool:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            seen.append(message)
        return len(seen) == 10

    wait_until(consumed_all, 60, "10 records consumed by the group")
    consumer.commit(
        offsets=[TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 2)], asynchronous=False
    )
    yield consumer
    consumer.close()


def test_groups_list_and_describe(cli: Cli, topic: str, member: Consumer) -> None:
    group = f"{topic}-group"
    listed = {g["group"]: g for g in cli.json("groups", "list")}
    assert listed[group]["state"] == "STABLE"
    assert listed[group]["kind"] == "consumer"
    assert [group, "STABLE", "consumer"] in rows(cli.ok("groups", "list"))

    described = cli.json("groups", "describe", group)
    (only,) = described["members"]
    assert only["client_id"] == "ops-test-consumer"
    assert only["host"] == "/127.0.0.1"
    assert only["assignment"] == [[topic, 0], [topic, 1]]
    assert described["state"] == "STABLE"
    offsets = {o["partition"]: o for o in described["offsets"]}
    assert {p: (o["committed"], o["end"], o["lag"]) for p, o in offsets.items()} == {
        0: (3, 5, 2),
        1: (2, 5, 3),
    }
    assert all(o["member_id"] == only["member_id"] for o in offsets.values())

    produce_values(cli.bootstrap, topic, 0, [b"more"] * 4)
    table = cli.ok("groups", "describe", group)
    body = rows(table)
    assert ["ops-test-consumer", "/127.0.0.1", f"{topic}-0, {topic}-1"] in [r[:3] for r in body]
    offset_rows = [r for r in body if r[0] == topic]
    assert [r[1:6] for r in offset_rows] == [
        ["0", "3", "9", "6", "ops-test-consumer"],
        ["1", "2", "5", "3", "ops-test-consumer"],
    ]


# -- transactions ------------------------------------------------------------------


@pytest.fixture
def hanging(cli: Cli, topic: str, tmp_path: Path) -> int:
    """Offsets 0-4 committed, 5-7 in a transaction whose producer was SIGKILLed, 8-11
    committed after it. Returns the stuck producer's process exit status."""
    cli.ok("topics", "create", topic)
    produce_values(cli.bootstrap, topic, 0, [b"before-%d" % i for i in range(5)])
    process = subprocess.Popen(
        [sys.executable, str(HANGING_SCRIPT), cli.bootstrap, topic, f"{topic}-txn", "3", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=TIMEOUT)
    produce_values(cli.bootstrap, topic, 0, [b"after-%d" % i for i in range(4)])
    return process.returncode


def test_hanging_transaction_is_found_and_aborted(cli: Cli, topic: str, hanging: int) -> None:
    assert hanging == -signal.SIGKILL
    (partition,) = cli.json("topics", "describe", topic)["partitions"]
    assert (partition["last_stable"], partition["high_watermark"]) == (5, 12)

    (found,) = cli.json("transactions", "list", "--topic", topic)
    assert found["topic"] == topic and found["partition"] == 0
    assert found["transactional_id"] == f"{topic}-txn"
    assert found["state"] == "Ongoing"
    assert (found["first_offset"], found["last_stable"], found["high_watermark"]) == (5, 5, 12)
    assert found["pins_lso"] is True
    assert 0 <= found["age_ms"] < 120_000
    producer_id = found["producer_id"]

    (row,) = rows(cli.ok("transactions", "list", "--topic", topic))
    assert row[1:4] == [str(producer_id), str(found["producer_epoch"]), f"{topic}-txn"]
    assert row[5:] == ["5", "5 *", "12"]

    described = cli.json("transactions", "describe", f"{topic}-txn")
    assert described["state"] == "Ongoing"
    assert described["producer_id"] == producer_id
    assert described["partitions"] == [[topic, 0]]
    assert [t["first_offset"] for t in described["open_on"]] == [5]
    summary, opened = rows(cli.ok("transactions", "describe", f"{topic}-txn"))
    assert summary[:4] == ["Ongoing", str(producer_id), str(found["producer_epoch"]), "600s"]
    assert opened[-3:] == ["5", "5 *", "12"]

    out = cli.ok(
        "transactions", "abort", "--topic", topic, "--partition", "0",
        "--producer-id", str(producer_id),
    )  # fmt: skip
    # The ABORT marker takes offset 12: the LSO jumps past it to the new high watermark.
    assert out.strip().endswith(f"on {topic}-0: LSO 5 -> 13")
    assert cli.json("transactions", "list", "--topic", topic) == []
    assert cli.ok("transactions", "list", "--topic", topic).strip() == "no open transactions"
    assert "has no open transaction" in cli.fails(
        "transactions", "abort", "--topic", topic, "--partition", "0",
        "--producer-id", str(producer_id),
    )  # fmt: skip

    consumer = confluent_consumer(cli.bootstrap, **{"isolation.level": "read_committed"})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        values = [m.value() for m in consume_confluent(consumer, 9)]
    finally:
        consumer.close()
    assert values == [b"before-%d" % i for i in range(5)] + [b"after-%d" % i for i in range(4)]
