"""Creating topics the way the demo, the benchmarks and tests need it: and waiting."""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka.admin import AdminClient, NewTopic

from onceflow.client_logging import client_config


def create_topics(
    bootstrap: str,
    *topics: str | NewTopic,
    partitions: int = 1,
    timeout: float = 30.0,
    client_settings: Mapping[str, str] | None = None,
) -> None:
    """Create ``topics`` and return once each exists; raise KafkaException if one cannot be
    created. A plain name gets ``partitions`` partitions and the broker's replication;
    ``client_settings`` (security) go to the admin client."""
    wanted = [t if isinstance(t, NewTopic) else NewTopic(t, partitions) for t in topics]
    # The client must outlive its futures: destroying it fails them with _DESTROY.
    admin = AdminClient(client_config({"bootstrap.servers": bootstrap}, client_settings))
    futures = admin.create_topics(wanted, request_timeout=timeout)
    for future in futures.values():
        future.result(timeout=timeout)
    admin.poll(0)  # hands the client's queued log lines to Python logging
