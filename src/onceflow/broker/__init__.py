"""The embedded single-node Kafka-compatible broker."""
