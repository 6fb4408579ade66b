"""At least once with plain confluent-kafka, written correctly.

For each batch: produce the outputs, wait until every one is acknowledged (flush),
and only then commit the input positions. A crash before the commit redoes the batch
(duplicates, allowed); nothing committed is ever unwritten (no loss).

    onceflow verify --guarantee at-least-once --input in --output out \\
        --command "python examples/kafka_at_least_once.py {input} {output}"
"""

from __future__ import annotations

from _app import app
from confluent_kafka import Consumer, KafkaException, Producer


def main() -> None:
    settings = app()
    consumer = Consumer(settings.consumer_settings("example-at-least-once"))
    # Idempotent: a retried send is not written twice; acks=all: acknowledged is durable.
    producer = Producer({"bootstrap.servers": settings.bootstrap, "enable.idempotence": True})
    failures: list[object] = []
    consumer.subscribe([settings.input])
    while not settings.stop.is_set():
        records = [m for m in consumer.consume(100, timeout=0.5) if m.error() is None]
        if not records:
            continue
        for record in records:
            producer.produce(
                settings.output, key=record.key(), value=record.value(),
                on_delivery=lambda error, _m: error is None or failures.append(error),
            )  # fmt: skip
        while producer.flush(10):
            pass  # not acknowledged yet: never commit past an unwritten output
        if failures:
            raise SystemExit(f"outputs were not written: {failures[0]}")
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            # The partitions moved (a rebalance, a restarted broker): their new owner
            # redoes the batch from the last commit. Duplicates, never loss.
            print(f"commit refused: {exc}", flush=True)
    consumer.close()


if __name__ == "__main__":
    main()
