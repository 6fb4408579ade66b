"""BROKEN on purpose: claims exactly once with an idempotent producer and no
transaction. Idempotence only stops a retried send from being written twice; it does
not tie the outputs to the input positions. Outputs are written (and acknowledged) at
once, positions committed every few seconds: a crash in between redoes the records, and
the verifier reports their outputs ``duplicate``.
"""

from __future__ import annotations

import time

from _app import app
from confluent_kafka import Consumer, KafkaException, Producer

COMMIT_EVERY_SECONDS = 3.0  # "fewer commits, more throughput"


def main() -> None:
    settings = app()
    consumer = Consumer(settings.consumer_settings("example-idempotent"))
    producer = Producer({"bootstrap.servers": settings.bootstrap, "enable.idempotence": True})
    consumer.subscribe([settings.input])
    last_commit = time.monotonic()
    while not settings.stop.is_set():
        records = [m for m in consumer.consume(100, timeout=0.5) if m.error() is None]
        for record in records:
            producer.produce(settings.output, key=record.key(), value=record.value())
        producer.flush(30)
        if time.monotonic() - last_commit >= COMMIT_EVERY_SECONDS:
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as exc:
                print(f"commit refused: {exc}", flush=True)
            last_commit = time.monotonic()
    consumer.close()


if __name__ == "__main__":
    main()
