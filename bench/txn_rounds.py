"""Fsync rounds and round trips per transaction commit, read from the broker's metrics.

What it measures: one confluent-kafka transactional producer runs ``--transactions``
transactions of ``--records`` records each (begin, produce, commit) against an
``onceflow broker --flush always`` process. The broker's Prometheus metrics are scraped
before and after: group-commit fsync rounds per transaction, the mean EndTxn latency
(the part of a commit that waits on fsync rounds), and AddPartitionsToTxn requests per
transaction: above 1 when the producer's next transaction met CONCURRENT_TRANSACTIONS
(its previous markers not yet durable) and retried.

Run it::

    .venv/bin/python bench/txn_rounds.py
    .venv/bin/python bench/txn_rounds.py --transactions 200 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from confluent_kafka import Producer

from onceflow.testing.metrics import scrape, total
from targets import onceflow_target

TOPIC = "rounds"
PAYLOAD = b"x" * 100


def run(bootstrap: str, metrics_port: int, transactions: int, records: int) -> dict[str, float]:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": "rounds", "linger.ms": 1}
    )
    producer.init_transactions(30)
    before = scrape(metrics_port)
    started = time.monotonic()
    for _ in range(transactions):
        producer.begin_transaction()
        for i in range(records):
            producer.produce(TOPIC, key=b"%d" % i, value=PAYLOAD)
        producer.commit_transaction(30)
    elapsed = time.monotonic() - started
    after = scrape(metrics_port)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    return {
        "transactions": transactions,
        "records_per_transaction": records,
        "ms_per_transaction": elapsed * 1000 / transactions,
        "fsync_rounds_per_transaction": delta("onceflow_broker_fsync_round_files_count")
        / transactions,
        "end_txn_ms": delta("onceflow_broker_request_seconds_sum", api="EndTxn")
        * 1000
        / max(1.0, delta("onceflow_broker_request_seconds_count", api="EndTxn")),
        "add_partitions_per_transaction": delta(
            "onceflow_broker_requests_total", api="AddPartitionsToTxn"
        )
        / transactions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=500)
    parser.add_argument("--records", type=int, default=10, help="records per transaction")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    with onceflow_target() as broker:
        assert broker.metrics_port is not None
        broker.create_topic(TOPIC, 1)
        result = run(broker.bootstrap, broker.metrics_port, args.transactions, args.records)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, value in result.items():
            print(f"{name:32} {value:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
