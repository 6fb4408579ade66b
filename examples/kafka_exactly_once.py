"""Exactly once with plain confluent-kafka transactions, written correctly.

For each batch: begin a transaction, produce the outputs, add the input positions to
the same transaction (with the group's metadata, so a zombie from an older generation
is refused), commit. Any failure aborts the transaction and rewinds to the committed
positions, so outputs and positions are applied together or not at all. The input is
read with ``read_committed``: records of aborted transactions upstream are never seen.

    onceflow verify --guarantee exactly-once --input in --output out \\
        --command "python examples/kafka_exactly_once.py {input} {output}"
"""

from __future__ import annotations

from _app import App, app
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

ATTEMPTS = 3
# Every transactional call gets a bound: without one, send_offsets_to_transaction
# waits forever for a coordinator it lost in a network cut.
TIMEOUT = 10.0


def new_producer(settings: App) -> Producer:
    producer = Producer(
        {
            "bootstrap.servers": settings.bootstrap,
            # Stable per instance: a restarted instance aborts what its predecessor left open.
            "transactional.id": f"example-exactly-once-{settings.instance}",
            "transaction.timeout.ms": 10000,
        }
    )
    producer.init_transactions(TIMEOUT * 3)
    return producer


def rewind(consumer: Consumer) -> None:
    """Go back to the committed positions: the aborted batch is read again."""
    for tp in consumer.committed(consumer.assignment(), timeout=10):
        offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
        consumer.seek(TopicPartition(tp.topic, tp.partition, offset))


def positions_after(records: list[Message]) -> list[TopicPartition]:
    """The input positions after ``records``: what the transaction commits."""
    after: dict[tuple[str, int], int] = {}
    for record in records:
        after[(record.topic(), record.partition())] = record.offset() + 1
    return [
        TopicPartition(topic, partition, offset) for (topic, partition), offset in after.items()
    ]


def commit(producer: Producer, consumer: Consumer, records: list[Message]) -> bool:
    """Add the positions after ``records`` to the open transaction and commit it;
    False (transaction still open) if the consumer is no longer in the group."""
    # Dropped from the group (a pause past the session timeout, a cut), the consumer
    # would send generation -1, which a broker accepts unchecked: never commit then.
    if not consumer.memberid():
        return False
    metadata = consumer.consumer_group_metadata()
    producer.send_offsets_to_transaction(positions_after(records), metadata, TIMEOUT)
    for attempt in range(ATTEMPTS):
        try:
            producer.commit_transaction(TIMEOUT)
            return True
        except KafkaException as exc:
            if not exc.args[0].retriable() or attempt == ATTEMPTS - 1:
                raise
    return False


def main(isolation: str = "read_committed") -> None:
    settings = app()
    consumer = Consumer(
        {**settings.consumer_settings("example-exactly-once"), "isolation.level": isolation}
    )
    producer = new_producer(settings)
    consumer.subscribe([settings.input])
    while not settings.stop.is_set():
        records = [m for m in consumer.consume(100, timeout=0.5) if m.error() is None]
        if not records:
            continue
        try:
            producer.begin_transaction()
            for record in records:
                producer.produce(settings.output, key=record.key(), value=record.value())
            if commit(producer, consumer, records):
                continue
            print("left the group: aborting, redoing the batch", flush=True)
            producer.abort_transaction(TIMEOUT)
        except KafkaException as exc:
            print(f"transaction failed, redoing the batch: {exc}", flush=True)
            if exc.args[0].txn_requires_abort():
                producer.abort_transaction(TIMEOUT)
            else:
                # Fatal for this producer (e.g. after a broker restart): a new one
                # with the same id aborts whatever the old one left open.
                producer = new_producer(settings)
        rewind(consumer)
    consumer.close()


if __name__ == "__main__":
    main()
