"""Processing runtime: at-most-once, at-least-once and exactly-once runners and sinks."""

from onceflow.processing.errors import ProcessingError, ProducerFencedError, RunnerConfigError
from onceflow.processing.records import Message, Output, Record, Row
from onceflow.processing.runner import (
    AFTER_COMMIT,
    BEFORE_COMMIT,
    BEFORE_OFFSETS,
    RECORD_PROCESSED,
    Runner,
    RunStats,
)
from onceflow.processing.sinks import (
    Database,
    DatabaseSink,
    ExactlyOnceSink,
    IdempotentSink,
    PostgresDatabase,
    SqliteDatabase,
)

__all__ = [
    "AFTER_COMMIT",
    "BEFORE_COMMIT",
    "BEFORE_OFFSETS",
    "RECORD_PROCESSED",
    "Database",
    "DatabaseSink",
    "ExactlyOnceSink",
    "IdempotentSink",
    "Message",
    "Output",
    "PostgresDatabase",
    "ProcessingError",
    "ProducerFencedError",
    "Record",
    "Row",
    "RunStats",
    "Runner",
    "RunnerConfigError",
    "SqliteDatabase",
]
