"""Database sinks of the processing runtime."""

from onceflow.processing.sinks.database import Database, SqliteDatabase
from onceflow.processing.sinks.postgres import PostgresDatabase
from onceflow.processing.sinks.sink import DatabaseSink, ExactlyOnceSink, IdempotentSink

__all__ = [
    "Database",
    "DatabaseSink",
    "ExactlyOnceSink",
    "IdempotentSink",
    "PostgresDatabase",
    "SqliteDatabase",
]
