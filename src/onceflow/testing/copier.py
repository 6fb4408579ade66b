"""A transactional copier, shaped like Apache Kafka's ``TransactionalMessageCopier``.

Run as its own OS process (``python -m onceflow.testing.copier``) so a test can
SIGKILL it. It consumes the input topic read_committed as a member of a consumer
group, and copies each polled batch to the same partition of the output topic in one
transaction together with the batch's offsets (``send_offsets_to_transaction`` with
the consumer's group metadata, KIP-447). About one transaction in ``--abort-every``
is aborted on purpose, after which it seeks back to the committed offsets, as
Kafka's copier does.

It never gives up on its own: it runs until its stdin closes (then it finishes the
open transaction and leaves the group) or ``--max-seconds`` pass. What it does is
reported as JSON lines on stdout, each with ``t`` (``time.monotonic()``, one clock for
every process on the machine):

- ``started``; ``assign`` / ``revoke`` / ``lost`` with ``parts``;
- ``got``: a polled batch, ``parts`` maps partition to records received;
- ``committed``: ``offsets`` maps partition to the next offset now committed, ``n``
  records copied;
- ``aborted``: ``n`` records, ``error`` (empty for an abort on purpose);
- ``fatal``: the producer or consumer cannot go on (the process exits 1);
- ``closed``.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import random
import select
import sys
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

#: Bounds every retry of one call (a commit, an offset fetch) while the broker is away.
CALL_TIMEOUT = 10.0
MAX_COMMIT_ATTEMPTS = 10
WATCHDOG_SECONDS = 20.0


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"ev": event, "t": time.monotonic(), **fields}) + "\n")
    sys.stdout.flush()


class Fatal(Exception):
    """The copier cannot continue: its producer was fenced or failed fatally."""


class Copier:
    """One consume-copy-commit loop; see the module docstring."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.random = random.Random(args.seed)
        common = {
            "bootstrap.servers": args.bootstrap,
            # Back soon after a broker restart instead of librdkafka's 10 s backoff cap.
            "reconnect.backoff.max.ms": 1000,
            # librdkafka 2.16 re-bootstraps when every known broker is down (a single
            # broker restarting): it decommissions the broker it learned, which the
            # producer keeps as group coordinator, and send_offsets_to_transaction then
            # hangs past its timeout (librdkafka #5511) with the transaction open.
            "metadata.recovery.strategy": "none",
        }
        if args.debug:
            common["debug"] = args.debug
        self.consumer = Consumer(
            {
                **common,
                "group.id": args.group,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": args.session_ms,
                "heartbeat.interval.ms": max(100, args.session_ms // 10),
                # The rebalance timeout: a member that does not rejoin is dropped after it.
                "max.poll.interval.ms": max(args.session_ms, 10000),
            }
        )
        self.producer = Producer(
            {
                **common,
                "transactional.id": args.transactional_id,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
            }
        )

    def run(self) -> int:
        self.producer.init_transactions(CALL_TIMEOUT * 3)
        self.consumer.subscribe(
            [self.args.input],
            on_assign=lambda _, parts: emit("assign", parts=_partitions(parts)),
            on_revoke=lambda _, parts: emit("revoke", parts=_partitions(parts)),
            on_lost=lambda _, parts: emit("lost", parts=_partitions(parts)),
        )
        emit("started")
        deadline = time.monotonic() + self.args.max_seconds
        try:
            while time.monotonic() < deadline and not _stdin_closed():
                # One turn taking this long is a hang: its stack goes to stderr.
                faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=False)
                batch = self._poll()
                if batch:
                    self._copy(batch)
        except Fatal as exc:
            emit("fatal", error=str(exc))
            return 1
        finally:
            faulthandler.cancel_dump_traceback_later()
        self.consumer.close()
        self.producer.flush(CALL_TIMEOUT)
        emit("closed")
        return 0

    def _poll(self) -> list[Message]:
        batch: list[Message] = []
        for message in self.consumer.consume(num_messages=self.args.batch, timeout=0.2):
            error = message.error()
            if error is None:
                batch.append(message)
            elif error.fatal():
                raise Fatal(f"consumer: {error}")
        if batch:
            counts: dict[int, int] = {}
            for message in batch:
                counts[message.partition()] = counts.get(message.partition(), 0) + 1
            emit("got", parts=counts)
        return batch

    def _copy(self, batch: list[Message]) -> None:
        offsets: dict[int, int] = {}
        try:
            self.producer.begin_transaction()
            for message in batch:
                self._produce(message)
                offsets[message.partition()] = message.offset() + 1
            if not self.consumer.memberid():
                # Dropped from the group (a broker restart forgets members): offsets
                # sent without a member id and generation go unchecked (KIP-447), and
                # the partitions may be someone else's by now.
                self._abort(len(batch), "not a group member")
                return
            self.producer.send_offsets_to_transaction(
                [TopicPartition(self.args.input, p, o) for p, o in offsets.items()],
                self.consumer.consumer_group_metadata(),
                CALL_TIMEOUT,
            )
            if self.random.random() < 1 / self.args.abort_every:
                self._abort(len(batch), "")
                return
            self._commit()
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.fatal() or not error.txn_requires_abort():
                raise Fatal(f"producer: {error}") from exc
            self._abort(len(batch), str(error))
            return
        emit("committed", offsets=offsets, n=len(batch))

    def _produce(self, message: Message) -> None:
        for _ in range(1000):
            try:
                self.producer.produce(
                    self.args.output,
                    key=message.key(),
                    value=message.value(),
                    partition=message.partition(),
                )
                return
            except BufferError:
                self.producer.poll(0.05)
        raise Fatal("producer queue stayed full")

    def _commit(self) -> None:
        """Retry a commit whose outcome is unknown (a timeout): never abort after it."""
        for attempt in range(1, MAX_COMMIT_ATTEMPTS + 1):
            try:
                self.producer.commit_transaction(CALL_TIMEOUT)
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if not error.retriable() or attempt == MAX_COMMIT_ATTEMPTS:
                    raise
        raise AssertionError("unreachable: the last attempt raises")

    def _abort(self, records: int, error: str) -> None:
        try:
            self.producer.abort_transaction(CALL_TIMEOUT)
        except KafkaException as exc:
            raise Fatal(f"abort: {exc.args[0]}") from exc
        emit("aborted", n=records, error=error)
        self._rewind()

    def _rewind(self) -> None:
        """Seek every assigned partition back to its committed offset."""
        assigned = self.consumer.assignment()
        if not assigned:
            return
        committed = None
        for _ in range(MAX_COMMIT_ATTEMPTS):
            try:
                committed = self.consumer.committed(assigned, timeout=CALL_TIMEOUT)
                break
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                # The broker may be restarting, or answer UNSTABLE_OFFSET_COMMIT until a
                # transaction ends (librdkafka retries that within the timeout).
                if not (error.retriable() or error.code() == KafkaError._TIMED_OUT):
                    raise Fatal(f"offset fetch: {error}") from exc
        if committed is None:
            raise Fatal("offset fetch kept failing")
        for tp in committed:
            # No committed offset yet: back to the start, as auto.offset.reset says.
            tp.offset = max(tp.offset, 0)
            self.consumer.seek(tp)


def _partitions(parts: list[TopicPartition]) -> list[int]:
    return sorted(tp.partition for tp in parts)


def _stdin_closed() -> bool:
    readable, _, _ = select.select([sys.stdin], [], [], 0)
    return bool(readable) and not sys.stdin.readline()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--transactional-id", required=True)
    parser.add_argument("--abort-every", type=int, default=5)
    parser.add_argument("--batch", type=int, default=200, help="records per transaction, at most")
    parser.add_argument("--session-ms", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--debug", default="", help="librdkafka debug contexts, to stderr")
    return Copier(parser.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
