"""BROKEN on purpose: claims at least once, loses records when it crashes.

It commits the input positions right after handing the outputs to the producer, which
batches them (linger.ms) and sends them later. A crash between the commit and the
send loses those outputs: the restarted instance starts after them.
The verifier reports them ``lost``.
"""

from __future__ import annotations

from _app import app
from confluent_kafka import Consumer, KafkaException, Producer


def main() -> None:
    settings = app()
    consumer = Consumer(settings.consumer_settings("example-commit-before-flush"))
    producer = Producer({"bootstrap.servers": settings.bootstrap, "linger.ms": 2000})
    consumer.subscribe([settings.input])
    while not settings.stop.is_set():
        records = [m for m in consumer.consume(100, timeout=0.5) if m.error() is None]
        for record in records:
            producer.produce(settings.output, key=record.key(), value=record.value())
        producer.poll(0)
        if records:
            try:
                consumer.commit(asynchronous=False)  # the bug: the outputs are not sent yet
            except KafkaException as exc:
                print(f"commit refused: {exc}", flush=True)
    producer.flush(30)
    consumer.close()


if __name__ == "__main__":
    main()
