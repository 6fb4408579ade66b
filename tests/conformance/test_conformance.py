"""Each scenario runs against ``onceflow broker`` and a 1-node Apache Kafka; the
normalised answers must be identical, except the differences DIFFERENCES.md keeps."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from onceflow.testing import BrokerProcess, KafkaCluster

from .differences import KEPT
from .normalise import Normaliser
from .scenarios import SCENARIOS
from .session import Session

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def onceflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    broker = BrokerProcess(tmp_path_factory.mktemp("conformance") / "data").start()
    yield broker
    broker.stop()


def answers(bootstrap: str, name: str) -> list[tuple[str, Any]]:
    session = Session(bootstrap, name)
    try:
        SCENARIOS[name](session)
    finally:
        session.close()
    normaliser = Normaliser()
    return [(label, normaliser.plain(response)) for label, response in session.recorded]


def differences(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Paths where the two plain values differ, with both values."""
    if isinstance(ours, dict) and isinstance(theirs, dict) and ours.keys() == theirs.keys():
        return [d for k in ours for d in differences(ours[k], theirs[k], f"{path}.{k}")]
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        return [
            d
            for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
            for d in differences(a, b, f"{path}[{i}]")
        ]
    return [] if ours == theirs else [f"{path}: onceflow {ours!r}, kafka {theirs!r}"]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_answers_match_apache_kafka(
    name: str, onceflow: BrokerProcess, onceflow_kafka: KafkaCluster
) -> None:
    ours = answers(onceflow.bootstrap, name)
    theirs = answers(onceflow_kafka.bootstrap, name)
    assert [label for label, _ in ours] == [label for label, _ in theirs]
    found = [
        d for (label, a), (_, b) in zip(ours, theirs, strict=True) for d in differences(a, b, label)
    ]
    kept = KEPT.get(name, ())
    assert found == [d for d in found if any(d.startswith(k) for k in kept)], (
        "differences not kept by DIFFERENCES.md:\n" + "\n".join(found)
    )
    assert not kept or found, f"{name}: DIFFERENCES.md keeps differences no longer seen"
