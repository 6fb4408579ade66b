"""kcat (librdkafka 2.0.x, older than the Python client's) against a real broker process.

A missing kcat fails these tests instead of skipping them, so CI cannot lose them silently.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from onceflow.testing import BrokerProcess

TIMEOUT = 60.0
COUNT = 300


def _kcat(*args: str, stdin: str | None = None) -> str:
    executable = shutil.which("kcat")
    assert executable, "kcat is not installed: apt-get install -y kcat (.ci/run does this)"
    done = subprocess.run(
        [executable, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"kcat {' '.join(args)} exited {done.returncode}: {done.stderr}"
    return done.stdout


def _consume_json(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Everything in the topic, one JSON envelope per message, read up to the end."""
    out = _kcat("-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-J", "-q")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_produce_and_consume_keyed_lines(
    shared_broker: BrokerProcess, topic: str, codec: str
) -> None:
    pairs = [(f"key-{i % 10}", f"line {i} from kcat " + "x" * (i % 50)) for i in range(COUNT)]
    _kcat(
        "-P", "-b", shared_broker.bootstrap, "-t", topic, "-K:", "-z", codec,
        "-H", "source=kcat",
        stdin="".join(f"{key}:{value}\n" for key, value in pairs),
    )  # fmt: skip

    plain = _kcat(
        "-C", "-b", shared_broker.bootstrap, "-t", topic, "-o", "beginning", "-e", "-K:", "-q"
    )  # fmt: skip
    assert plain.splitlines() == [f"{key}:{value}" for key, value in pairs]

    messages = _consume_json(shared_broker.bootstrap, topic)
    assert [(m["key"], m["payload"]) for m in messages] == pairs
    assert [m["offset"] for m in messages] == list(range(COUNT))
    assert {m["partition"] for m in messages} == {0}
    assert all(m["headers"] == ["source", "kcat"] for m in messages)
    assert all(m["tstype"] == "create" and m["ts"] > 0 for m in messages)


def test_metadata_lists_topic(shared_broker: BrokerProcess, topic: str) -> None:
    _kcat("-P", "-b", shared_broker.bootstrap, "-t", topic, stdin="one\n")

    metadata = json.loads(_kcat("-L", "-b", shared_broker.bootstrap, "-t", topic, "-J"))
    assert [b["name"] for b in metadata["brokers"]] == [shared_broker.bootstrap]
    (node,) = (b["id"] for b in metadata["brokers"])
    (listed,) = metadata["topics"]
    assert listed["topic"] == topic
    assert "error" not in listed, listed
    (partition,) = listed["partitions"]
    assert partition["partition"] == 0
    assert partition["leader"] == node
    assert [r["id"] for r in partition["replicas"]] == [node]
    assert [r["id"] for r in partition["isrs"]] == [node]

    # Listing every topic includes this one too.
    everything = json.loads(_kcat("-L", "-b", shared_broker.bootstrap, "-J"))
    assert topic in {t["topic"] for t in everything["topics"]}
