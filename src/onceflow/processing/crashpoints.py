"""Names of the points where the runner calls its ``fault_hook``.

Tests and the verifier kill or pause a runner exactly there; they are not part of the
runtime's everyday API, so they live apart from ``onceflow.processing``.
"""

from __future__ import annotations

#: A record was processed and its outputs handed to Kafka or the sink (work is pending).
RECORD_PROCESSED = "record_processed"
#: Outputs produced or rows staged; the positions are not yet in the transaction (Kafka
#: transactions: before ``send_offsets_to_transaction``; an exactly-once sink: before the
#: database transaction). A process paused here is a zombie with uncommitted work.
BEFORE_OFFSETS = "before_offsets"
#: Kafka transactions and at-least-once: just before the commit. An exactly-once sink:
#: just after the database commit, before the informational group commit.
BEFORE_COMMIT = "before_commit"
AFTER_COMMIT = "after_commit"

ALL = (RECORD_PROCESSED, BEFORE_OFFSETS, BEFORE_COMMIT, AFTER_COMMIT)
