from confluent_kafka import Consumer, Producer, TopicPartition


def _round_trip(bootstrap: str, count: int) -> list[bytes]:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(count):
        producer.produce("t", value=b"%d" % i)
    assert producer.flush(30) == 0
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition("t", 0, 0)])
    values = [m.value() for m in consumer.consume(count, timeout=10)]
    consumer.close()
    return values


def test_in_process_fixture(onceflow_broker):
    assert _round_trip(onceflow_broker.bootstrap, 100) == [b"%d" % i for i in range(100)]


def test_process_fixture(onceflow_broker_process):
    assert _round_trip(onceflow_broker_process.bootstrap, 100) == [b"%d" % i for i in range(100)]
