"""Guarantees as data, override validation, and ``onceflow config``."""

from __future__ import annotations

import json
import re

import pytest

from onceflow import Guarantee
from onceflow.cli import main
from onceflow.guarantees import (
    GuaranteeConfigError,
    consumer_config,
    consumer_settings,
    producer_config,
    producer_settings,
)


@pytest.mark.parametrize("guarantee", list(Guarantee))
def test_every_setting_has_a_reason(guarantee: Guarantee) -> None:
    settings = (*producer_settings(guarantee), *consumer_settings(guarantee))
    assert settings
    assert all(s.reason.strip() for s in settings)
    assert consumer_config(guarantee)["enable.auto.commit"] is False


def test_exactly_once_is_transactional_and_read_committed() -> None:
    producer = producer_config(Guarantee.EXACTLY_ONCE, transactional_id="runner-1")
    assert producer["transactional.id"] == "runner-1"
    assert producer["acks"] == "all" and producer["enable.idempotence"] is True
    assert consumer_config(Guarantee.EXACTLY_ONCE)["isolation.level"] == "read_committed"


def test_at_most_once_never_retries_nor_waits_for_acks() -> None:
    config = producer_config(Guarantee.AT_MOST_ONCE)
    assert config["retries"] == 0 and config["acks"] == "0"


EOS, ALO, AMO = Guarantee.EXACTLY_ONCE, Guarantee.AT_LEAST_ONCE, Guarantee.AT_MOST_ONCE


def _config(guarantee: Guarantee, role: str, override: dict[str, object]) -> dict[str, object]:
    if role == "producer":
        return producer_config(guarantee, override, transactional_id="t")
    return consumer_config(guarantee, override)


# librdkafka aliases and spellings of a weakening override: each is still refused.
@pytest.mark.parametrize(
    ("guarantee", "role", "override", "needle"),
    [
        (EOS, "producer", {"request.required.acks": 0}, "acks"),
        (EOS, "producer", {"topic.acks": "1"}, "acks"),
        (EOS, "producer", {"default.topic.config": {"request.required.acks": 1}}, "acks"),
        (ALO, "producer", {"message.send.max.retries": 0}, "retries"),
        (AMO, "producer", {"retries": " 3"}, "retries"),
        (EOS, "producer", {"enable.idempotence": "f"}, "enable.idempotence"),
        (ALO, "consumer", {"auto.commit.enable": "true"}, "enable.auto.commit"),
        (ALO, "consumer", {"topic.auto.commit.enable": True}, "enable.auto.commit"),
        (ALO, "consumer", {"enable.auto.commit": "t"}, "enable.auto.commit"),
        (ALO, "consumer", {"enable.auto.offset.store": "True"}, "enable.auto.offset.store"),
        (EOS, "consumer", {"isolation.level": "READ_UNCOMMITTED"}, "isolation.level"),
    ],
)
def test_weakening_alias_or_spelling_is_an_error(
    guarantee: Guarantee, role: str, override: dict[str, object], needle: str
) -> None:
    with pytest.raises(GuaranteeConfigError, match=re.escape(needle)):
        _config(guarantee, role, override)


# Other spellings of the very value a guarantee needs: accepted, under the canonical key.
@pytest.mark.parametrize(
    ("guarantee", "role", "override", "key"),
    [
        (EOS, "producer", {"acks": -1}, "acks"),
        (EOS, "producer", {"acks": "-1"}, "acks"),
        (EOS, "producer", {"acks": "ALL"}, "acks"),
        (EOS, "producer", {"request.required.acks": "all"}, "acks"),
        (ALO, "producer", {"retries": "2147483647"}, "retries"),
        (ALO, "producer", {"message.send.max.retries": 2147483647}, "retries"),
        (AMO, "producer", {"retries": "0"}, "retries"),
        (EOS, "producer", {"enable.idempotence": "TRUE"}, "enable.idempotence"),
        (ALO, "consumer", {"enable.auto.commit": "false"}, "enable.auto.commit"),
        (ALO, "consumer", {"enable.auto.commit": "F"}, "enable.auto.commit"),
        (ALO, "consumer", {"auto.commit.enable": False}, "enable.auto.commit"),
        (ALO, "consumer", {"enable.auto.offset.store": "0"}, "enable.auto.offset.store"),
        (EOS, "consumer", {"isolation.level": "READ_COMMITTED"}, "isolation.level"),
    ],
)
def test_same_meaning_is_accepted(
    guarantee: Guarantee, role: str, override: dict[str, object], key: str
) -> None:
    config = _config(guarantee, role, override)
    assert config[key] == next(iter(override.values()))
    assert all(k == key or k not in config for k in override), "alias not renamed"


def test_one_setting_under_two_names_must_agree() -> None:
    with pytest.raises(GuaranteeConfigError, match="given twice"):
        producer_config(EOS, {"acks": "all", "request.required.acks": 1}, transactional_id="t")
    config = producer_config(
        EOS, {"acks": "all", "request.required.acks": -1}, transactional_id="t"
    )
    assert config["acks"] == -1 and "request.required.acks" not in config


@pytest.mark.parametrize(
    ("guarantee", "role", "override", "needle"),
    [
        (Guarantee.EXACTLY_ONCE, "producer", {"acks": 0}, "acks"),
        (Guarantee.EXACTLY_ONCE, "producer", {"enable.idempotence": "false"}, "idempotence"),
        (Guarantee.EXACTLY_ONCE, "consumer", {"isolation.level": "read_uncommitted"}, "isolation"),
        (Guarantee.AT_LEAST_ONCE, "consumer", {"enable.auto.commit": True}, "auto.commit"),
        (Guarantee.AT_LEAST_ONCE, "producer", {"acks": "1"}, "acks"),
        (Guarantee.AT_MOST_ONCE, "producer", {"retries": 5}, "retries"),
        (Guarantee.AT_LEAST_ONCE, "producer", {"transactional.id": "x"}, "transactional.id"),
    ],
)
def test_weakening_override_is_an_error(
    guarantee: Guarantee, role: str, override: dict[str, object], needle: str
) -> None:
    with pytest.raises(GuaranteeConfigError, match=re.escape(needle)) as raised:
        if role == "producer":
            producer_config(guarantee, override, transactional_id="t")
        else:
            consumer_config(guarantee, override)
    assert guarantee.value in str(raised.value)


def test_compatible_overrides_pass_through() -> None:
    config = producer_config(
        Guarantee.EXACTLY_ONCE,
        {"acks": "all", "linger.ms": 5, "transaction.timeout.ms": 10000},
        transactional_id="t",
    )
    assert config["linger.ms"] == 5 and config["transaction.timeout.ms"] == 10000
    assert consumer_config(Guarantee.AT_LEAST_ONCE, {"enable.auto.commit": "false"})
    with pytest.raises(GuaranteeConfigError, match=r"transactional\.id"):
        producer_config(Guarantee.EXACTLY_ONCE)


def test_parse_accepts_spellings() -> None:
    assert Guarantee.parse("EXACTLY_ONCE") is Guarantee.EXACTLY_ONCE
    assert Guarantee.parse("alo") is Guarantee.AT_LEAST_ONCE
    with pytest.raises(ValueError, match="choose one of"):
        Guarantee.parse("twice")


def test_cli_config_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "exactly-once", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["guarantee"] == "exactly-once"
    by_key = {(r["client"], r["key"]): r for r in out["settings"]}
    assert by_key[("consumer", "isolation.level")]["value"] == "read_committed"
    assert by_key[("producer", "acks")]["reason"]


def test_cli_config_shows_why_at_most_once_does_not_wait_for_acks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["config", "at-most-once", "--json"]) == 0
    by_key = {(r["client"], r["key"]): r for r in json.loads(capsys.readouterr().out)["settings"]}
    assert by_key[("producer", "acks")]["value"] == "0"
    assert "logs and metrics" in by_key[("producer", "acks")]["reason"]


def test_cli_config_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "at-least-once"]) == 0
    out = capsys.readouterr().out
    assert "enable.auto.commit" in out and "at-least-once" in out


def test_cli_config_unknown_guarantee(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "twice"]) == 2
    assert "unknown guarantee" in capsys.readouterr().err
