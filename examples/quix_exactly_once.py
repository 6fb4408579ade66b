"""Exactly once with Quix Streams: a pipeline written as its users write one.

Each input record goes, unchanged and with its key, to the output topic; Quix Streams
with ``processing_guarantee="exactly-once"`` puts the outputs and the input positions
of each checkpoint in one Kafka transaction and reads the input with
``read_committed``. The one setting added to Quix Streams' defaults is a stable
transactional id per instance (see below). Quix Streams pins an older confluent-kafka
than onceflow, so run it from the virtualenv that has it (``make .venv-quix/.installed``
builds one here):

    onceflow verify --guarantee exactly-once --input in --output out \\
        --command ".venv-quix/bin/python examples/quix_exactly_once.py {input} {output}"
"""

from __future__ import annotations

import tempfile

from _app import app
from quixstreams import Application


def main() -> None:
    settings = app()
    quix = Application(
        broker_address=settings.bootstrap,
        consumer_group="example-quix-exactly-once",
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        # Shorter than the verifier's pause: a paused instance loses its partitions.
        consumer_extra_config={"session.timeout.ms": 6000},
        # Stable per instance (Quix Streams picks a random one by default): a restarted
        # instance then aborts the transaction its killed predecessor left open at once,
        # instead of that transaction hiding every later output from read_committed
        # readers until transaction.timeout.ms. That timeout outlasts the verifier's
        # pause, so a paused instance is not fenced by it (and does not die of it).
        producer_extra_config={
            "transactional.id": f"example-quix-exactly-once-{settings.instance}",
            "transaction.timeout.ms": 30000,
        },
        # A stateless pipeline keeps no state, but Quix Streams wants a directory.
        state_dir=tempfile.mkdtemp(prefix="quix-state-"),
        loglevel="WARNING",
    )
    source = quix.topic(settings.input, key_deserializer="bytes", value_deserializer="bytes")
    sink = quix.topic(settings.output, key_serializer="bytes", value_serializer="bytes")
    quix.dataframe(source).to_topic(sink)
    # Quix Streams installs its own SIGTERM handler: it finishes the checkpoint, stops.
    quix.run()


if __name__ == "__main__":
    main()
