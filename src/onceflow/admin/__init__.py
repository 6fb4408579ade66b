"""Operator tooling: cluster inspection and administration for any Kafka-compatible cluster."""
