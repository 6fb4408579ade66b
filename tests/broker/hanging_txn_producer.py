"""Begin a transaction, produce into it, print "ready" once the records are acknowledged,
then wait to be killed: the transaction is left open, as a crashed producer leaves it.

usage: python hanging_txn_producer.py BOOTSTRAP TOPIC TRANSACTIONAL_ID COUNT MAX_SECONDS
"""

from __future__ import annotations

import sys
import time

from confluent_kafka import Producer

# The broker must not time the transaction out during a test: only an abort ends it.
TRANSACTION_TIMEOUT_MS = 10 * 60 * 1000


def main(bootstrap: str, topic: str, transactional_id: str, count: int, max_seconds: float) -> int:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id,
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for index in range(count):
        producer.produce(topic, value=f"open-{index}".encode(), partition=0)
    if producer.flush(30) != 0:
        return 1
    print("ready", flush=True)
    # Bounded: a test that forgets to kill this process does not leave it behind forever.
    time.sleep(max_seconds)
    return 0


if __name__ == "__main__":
    bootstrap, topic, transactional_id, count, max_seconds = sys.argv[1:]
    sys.exit(main(bootstrap, topic, transactional_id, int(count), float(max_seconds)))
