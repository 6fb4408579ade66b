"""Errors of the processing runtime."""

from __future__ import annotations

from onceflow.guarantees import GuaranteeConfigError


class RunnerConfigError(GuaranteeConfigError):
    """The runner's arguments contradict each other or the chosen guarantee."""


class ProcessingError(RuntimeError):
    """The process function failed and no dead-letter topic was configured."""


class ProducerFencedError(RuntimeError):
    """The transactional producer stayed fenced or fatal after rebuilding it."""


class PartitionsFencedError(RuntimeError):
    """An exactly-once sink refused a commit: another runner claimed these partitions
    after this one did (this runner is a zombie). Nothing was written."""

    def __init__(self, partitions: list[tuple[str, int]]) -> None:
        self.partitions = partitions
        names = ", ".join(f"{t}[{p}]" for t, p in partitions)
        super().__init__(f"another runner owns {names} now; the commit was rolled back")
