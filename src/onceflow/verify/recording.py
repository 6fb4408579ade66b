"""Recording wrappers: the real clients and sink, with every step written to a history.

``RecordingProducer`` and ``RecordingConsumer`` wrap confluent-kafka clients,
``RecordingSink`` wraps a database sink, and ``RecordingRunner`` is the processing
runtime's ``Runner`` with its clients, sink and process function wrapped, so the
verifier checks the very runtime users run rather than a second pipeline.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from onceflow.processing import Output, Record, Row, Runner
from onceflow.processing.runner import ProcessFn
from onceflow.processing.sinks.sink import DatabaseSink, TopicPartitionKey
from onceflow.verify.history import WRITE_ID_HEADER, Recorder

DeliveryCallback = Callable[[KafkaError | None, Any], None]
_instances = itertools.count(1)


def value_id(value: bytes | str | None) -> str | None:
    """The business identity of a record value: an order's (or payment's) order id."""
    if value is None:
        return None
    try:
        decoded = json.loads(value)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict) and "order_id" in decoded:
        return str(decoded["order_id"])
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _text(data: bytes | str | None) -> str | None:
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


def header(headers: Iterable[tuple[str, bytes | None]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name and value is not None:
            return value.decode()
    return None


class RecordingProducer:
    """A producer that records sends, acknowledgements and transaction steps.

    Every write gets a unique id in the ``onceflow.verify.id`` header (kept if the
    caller set one), so each copy of a record can be traced to the send that made it.
    """

    def __init__(
        self,
        producer: Producer,
        recorder: Recorder,
        *,
        transactional_id: str | None = None,
        group: str | None = None,
        downstream: DeliveryCallback | None = None,
    ) -> None:
        self._producer = producer
        self._recorder = recorder
        self._downstream = downstream
        self._group = group
        self._writes = itertools.count(1)
        self._txns = itertools.count(1)
        self.instance = f"{recorder.proc}-{recorder.pid}-{next(_instances)}"
        self.transactional_id = transactional_id
        self.txn: str | None = None
        if transactional_id is not None:
            recorder.record("txn_init", tid=transactional_id, instance=self.instance)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)

    def produce(
        self,
        topic: str,
        value: bytes | str | None = None,
        key: bytes | str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        **options: Any,
    ) -> None:
        headers = list(headers or [])
        write_id = header(headers, WRITE_ID_HEADER)
        if write_id is None:
            write_id = f"{self.instance}-w{next(self._writes)}"
            headers.append((WRITE_ID_HEADER, write_id.encode()))
        downstream = options.pop("on_delivery", None) or self._downstream

        def delivered(error: KafkaError | None, message: Any) -> None:
            if error is None and message.offset() is None:
                pass  # acks=0 (at most once): sent, never acknowledged, no position
            elif error is None:
                self._recorder.record(
                    "ack", id=write_id, topic=message.topic(), partition=message.partition(),
                    offset=message.offset(),
                )  # fmt: skip
            else:
                self._recorder.record("ack_error", id=write_id, error=str(error))
            if downstream is not None:
                downstream(error, message)

        self._recorder.record(
            "send", topic=topic, id=write_id, value_id=value_id(value), key=_text(key),
            txn=self.txn,
        )  # fmt: skip
        self._producer.produce(
            topic, value=value, key=key, headers=headers, on_delivery=delivered, **options
        )

    def begin_transaction(self) -> None:
        self._producer.begin_transaction()
        self.txn = f"{self.instance}-t{next(self._txns)}"
        self._recorder.record(
            "txn_begin", tid=self.transactional_id, instance=self.instance, txn=self.txn
        )

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], *args: Any) -> None:
        self._producer.send_offsets_to_transaction(offsets, *args)
        self._recorder.record(
            "txn_offsets", txn=self.txn, group=self._group,
            offsets=[[tp.topic, tp.partition, tp.offset] for tp in offsets],
        )  # fmt: skip

    def commit_transaction(self, *args: Any) -> None:
        self._recorder.record("txn_commit_start", txn=self.txn)
        self._producer.commit_transaction(*args)
        self._recorder.record("txn_commit", txn=self.txn)
        self.txn = None

    def abort_transaction(self, *args: Any) -> None:
        self._producer.abort_transaction(*args)
        self._recorder.record("txn_abort", txn=self.txn)
        self.txn = None


class RecordingConsumer:
    """A consumer that records assignments, seeks, polled records and offset commits."""

    def __init__(self, consumer: Consumer, recorder: Recorder, *, group: str, isolation: str):
        self._consumer = consumer
        self._recorder = recorder
        self._group = group
        self._isolation = isolation

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)

    def _recorded(self, kind: str, callback: Callable[..., None] | None) -> Callable[..., None]:
        def on_change(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            self._recorder.record(kind, partitions=[[p.topic, p.partition] for p in partitions])
            if callback is not None:
                callback(consumer, partitions)

        return on_change

    def subscribe(
        self,
        topics: list[str],
        on_assign: Callable[..., None] | None = None,
        on_revoke: Callable[..., None] | None = None,
        **options: Any,
    ) -> None:
        self._consumer.subscribe(
            topics, on_assign=self._recorded("assign", on_assign),
            on_revoke=self._recorded("revoke", on_revoke), **options,
        )  # fmt: skip

    def consume(self, *args: Any, **kwargs: Any) -> list[Any]:
        messages = self._consumer.consume(*args, **kwargs)
        for message in messages:
            if message.error() is None:
                self.record_poll(message)
        return messages

    def record_poll(self, message: Any) -> None:
        value = message.value()
        self._recorder.record(
            "poll", isolation=self._isolation, topic=message.topic(),
            partition=message.partition(), offset=message.offset(),
            id=header(message.headers(), WRITE_ID_HEADER) or value_id(value),
            value_id=value_id(value), key=_text(message.key()),
        )  # fmt: skip

    def seek(self, partition: TopicPartition) -> None:
        self._consumer.seek(partition)
        self._recorder.record(
            "seek", topic=partition.topic, partition=partition.partition, offset=partition.offset
        )

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        result = self._consumer.commit(*args, **kwargs)
        offsets = kwargs.get("offsets")
        # Only a synchronous commit that returned is known to have happened.
        if offsets is not None and kwargs.get("asynchronous") is False:
            self._recorder.record(
                "commit", group=self._group,
                offsets=[[tp.topic, tp.partition, tp.offset] for tp in offsets],
            )  # fmt: skip
        return result


class RecordingSink:
    """A database sink that records each row written and each commit or rollback."""

    def __init__(self, sink: DatabaseSink, recorder: Recorder) -> None:
        self._sink = sink
        self._recorder = recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sink, name)

    def write(self, record: Record, index: int, row: Row) -> None:
        # The sink stages rows; which were new is known once they are committed.
        self._sink.write(record, index, row)

    def commit(self, group: str, offsets: dict[TopicPartitionKey, int]) -> list[str]:
        inserted = self._sink.commit(group, offsets)
        for key in inserted:
            self._recorder.record("sink_write", key=key, inserted=True)
        stored = [[t, p, o] for (t, p), o in offsets.items()] if self._sink.exactly_once else []
        self._recorder.record("sink_commit", keys=inserted, group=group, offsets=stored)
        return inserted

    def rollback(self) -> None:
        self._sink.rollback()
        self._recorder.record("sink_rollback")


class RecordingRunner(Runner):
    """The processing runtime's ``Runner``, recording everything it does.

    The runner assigns ``self.consumer`` and ``self.producer`` when it (re)builds its
    clients; these properties wrap each new client on assignment, so the runtime needs
    no hook for the verifier.
    """

    def __init__(self, *, recorder: Recorder, **options: Any) -> None:
        self.recorder = recorder
        super().__init__(**options)
        self.process = self._recording(self.process)
        if self.sink is not None:
            self.sink = RecordingSink(self.sink, recorder)  # type: ignore[assignment]

    def _recording(self, process: ProcessFn) -> ProcessFn:
        def recorded(record: Record) -> list[Output]:
            self.recorder.record(
                "process", topic=record.topic, partition=record.partition,
                offset=record.offset, value_id=value_id(record.value),
            )  # fmt: skip
            return list(process(record))

        return recorded

    @property  # type: ignore[override]
    def consumer(self) -> Consumer | None:
        return self.__dict__.get("_recording_consumer")

    @consumer.setter
    def consumer(self, consumer: Consumer | None) -> None:
        if consumer is not None and not isinstance(consumer, RecordingConsumer):
            isolation = str(self.consumer_settings.get("isolation.level", "read_committed"))
            consumer = RecordingConsumer(  # type: ignore[assignment]
                consumer, self.recorder, group=self.group, isolation=isolation
            )
        self.__dict__["_recording_consumer"] = consumer

    @property  # type: ignore[override]
    def producer(self) -> Producer | None:
        return self.__dict__.get("_recording_producer")

    @producer.setter
    def producer(self, producer: Producer | None) -> None:
        if producer is not None and not isinstance(producer, RecordingProducer):
            producer = RecordingProducer(  # type: ignore[assignment]
                producer, self.recorder, transactional_id=self.transactional_id,
                group=self.group, downstream=self._on_delivery,
            )  # fmt: skip
        self.__dict__["_recording_producer"] = producer
