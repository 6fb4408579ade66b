"""Fixtures of the Apache Kafka tests: names unique to each test."""

from __future__ import annotations

import re

import pytest


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic name unique to the test, legal for Kafka (parametrized ids included)."""
    return re.sub(r"[^a-zA-Z0-9._-]", "-", request.node.name)[:200]
