"""Processing runtime: at-most-once, at-least-once and exactly-once runners and sinks."""

from onceflow.processing.errors import (
    InstanceFencedError,
    PartitionsFencedError,
    ProcessingError,
    ProducerFencedError,
    RunnerConfigError,
)
from onceflow.processing.records import Message, Output, Record, Row
from onceflow.processing.runner import Runner
from onceflow.processing.sinks import (
    Database,
    DatabaseSink,
    ExactlyOnceSink,
    IdempotentSink,
    PostgresDatabase,
    SqliteDatabase,
)
from onceflow.processing.stats import RunStats

__all__ = [
    "Database",
    "DatabaseSink",
    "ExactlyOnceSink",
    "IdempotentSink",
    "InstanceFencedError",
    "Message",
    "Output",
    "PartitionsFencedError",
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
