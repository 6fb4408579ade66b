"""Errors of the processing runtime."""

from __future__ import annotations

from onceflow.guarantees import GuaranteeConfigError


class RunnerConfigError(GuaranteeConfigError):
    """The runner's arguments contradict each other or the chosen guarantee."""


class ProcessingError(RuntimeError):
    """The process function failed and no dead-letter topic was configured."""


class ProducerFencedError(RuntimeError):
    """The transactional producer stayed fenced or fatal after rebuilding it."""


class InstanceFencedError(RuntimeError):
    """A newer runner with this runner's identity (its ``group.instance.id``, and so its
    transactional id) took its place in the group: this runner is a zombie of a
    restarted instance, or a second runner given the same instance name. It stops
    rather than fence its successor back, as Kafka Streams stops on
    FENCED_INSTANCE_ID."""

    def __init__(self, identity: str, group: str, instance_id: str | None) -> None:
        self.identity = identity
        who = f"group.instance.id {instance_id!r}" if instance_id else f"identity {identity!r}"
        super().__init__(
            f"fenced by its own identity: another runner holds {who} in group {group!r} "
            f"now (a restart of this instance, or a second runner with the same instance "
            f"name); this one stops instead of fencing it back"
        )


class PartitionsFencedError(RuntimeError):
    """An exactly-once sink refused a commit: another runner claimed these partitions
    after this one did (this runner is a zombie). Nothing was written."""

    def __init__(self, partitions: list[tuple[str, int]]) -> None:
        self.partitions = partitions
        names = ", ".join(f"{t}[{p}]" for t, p in partitions)
        super().__init__(f"another runner owns {names} now; the commit was rolled back")
