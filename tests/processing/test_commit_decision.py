"""What follows a failed ``commit_transaction``: never an abort once its outcome is
unknown (KAFKA-17754). The errors are real ``KafkaError`` values as librdkafka raises
them; ``test_runner.py`` makes a commit really time out against a paused broker."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from onceflow.processing.policies import CommitAction, after_failed_commit

TIMED_OUT = KafkaError(KafkaError._TIMED_OUT, "commit timed out", retriable=True)
ABORTABLE = KafkaError(KafkaError.INVALID_TXN_STATE, "abortable", txn_requires_abort=True)
FENCED = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
FATAL = KafkaError(KafkaError.INVALID_PRODUCER_EPOCH, "fatal", fatal=True)
OTHER = KafkaError(KafkaError._STATE, "neither retriable nor abortable")


@pytest.mark.parametrize(
    ("error", "ambiguous", "last_attempt", "action"),
    [
        (TIMED_OUT, False, False, CommitAction.RETRY),
        (TIMED_OUT, True, False, CommitAction.RETRY),
        (TIMED_OUT, True, True, CommitAction.REBUILD),
        (ABORTABLE, False, False, CommitAction.ABORT),
        (ABORTABLE, False, True, CommitAction.ABORT),
        # An earlier attempt timed out: its EndTxn may still commit, never abort now.
        (ABORTABLE, True, False, CommitAction.REBUILD),
        (ABORTABLE, True, True, CommitAction.REBUILD),
        (FENCED, False, False, CommitAction.REBUILD),
        (FATAL, True, False, CommitAction.REBUILD),
        (OTHER, False, False, CommitAction.REBUILD),
    ],
)
def test_after_failed_commit(
    error: KafkaError, ambiguous: bool, last_attempt: bool, action: CommitAction
) -> None:
    assert after_failed_commit(error, ambiguous=ambiguous, last_attempt=last_attempt) is action
