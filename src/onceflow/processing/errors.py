"""Errors of the processing runtime."""

from __future__ import annotations

from onceflow.guarantees import GuaranteeConfigError


class RunnerConfigError(GuaranteeConfigError):
    """The runner's arguments contradict each other or the chosen guarantee."""


class ProcessingError(RuntimeError):
    """The process function failed and no dead-letter topic was configured."""


class ProducerFencedError(RuntimeError):
    """The transactional producer stayed fenced or fatal after rebuilding it."""
