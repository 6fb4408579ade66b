"""Produce until killed, logging every acknowledged record as "partition offset value".

Run as its own process by the durability tests: the log is their record of what the
broker promised to keep. Each line is written and flushed as its delivery report
arrives, so a SIGKILL of this process loses at most acknowledgements, never invents one.

usage: python acked_producer.py BOOTSTRAP TOPIC PARTITIONS ACK_LOG MAX_SECONDS
"""

from __future__ import annotations

import sys
import time
from typing import Any

from confluent_kafka import Producer

# Large enough that a few thousand records roll 1 MiB segments.
PADDING = "x" * 500


def main(bootstrap: str, topic: str, partitions: int, ack_log: str, max_seconds: float) -> int:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            # Many batches per segment, so kills land between and inside batch writes.
            "batch.size": 64 * 1024,
        }
    )
    failures = 0
    with open(ack_log, "w", buffering=1, encoding="ascii") as acks:

        def on_delivery(error: Any, message: Any) -> None:
            nonlocal failures
            if error is not None:
                failures += 1
                return
            acks.write(f"{message.partition()} {message.offset()} {message.value().decode()}\n")

        deadline = time.monotonic() + max_seconds
        sequence = 0
        while time.monotonic() < deadline:
            value = f"{sequence:09d}-{PADDING}"
            try:
                producer.produce(
                    topic,
                    value=value.encode(),
                    partition=sequence % partitions,
                    on_delivery=on_delivery,
                )
                sequence += 1
            except BufferError:
                producer.poll(0.05)
            producer.poll(0)
        producer.flush(10)
    print(f"produced {sequence}, {failures} failed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    bootstrap, topic, partitions, ack_log, max_seconds = sys.argv[1:]
    sys.exit(main(bootstrap, topic, int(partitions), ack_log, float(max_seconds)))
