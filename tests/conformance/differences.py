"""Per scenario: the answer paths where onceflow may differ from Apache Kafka, each
explained in DIFFERENCES.md. A difference not listed fails the scenario, and a listed
one that is no longer seen fails it too, so the list stays true."""

from __future__ import annotations

KEPT: dict[str, tuple[str, ...]] = {
    # onceflow creates the topic inside the Metadata call; Kafka answers first and
    # creates it through its controller.
    "metadata-auto-creates-topic": ("created.error_code",),
    # Kafka bumps the epoch twice (abort, then the new producer); onceflow once.
    "txn-init-again-fences-old-epoch": ("init-again.producer_epoch",),
    # Other records on used sequences: Kafka answers them as a retry of the batch that
    # holds those sequences; onceflow refuses them (OUT_OF_ORDER_SEQUENCE_NUMBER).
    "idempotent-epoch-bump-fences-old-epoch": (
        "new-epoch.responses[0].partition_responses[0].error_code",
        "new-epoch.responses[0].partition_responses[0].base_offset",
    ),
}
