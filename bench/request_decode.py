"""What the broker spends on each request before a handler sees it, against kio's decode.

Every request frame goes through ``onceflow.broker.protocol.decode_request``: kio reads
the header, the pre-scan (``broker/frame_scan.py``) bounds every array count by the
bytes left, kio decodes the body, and the null check (``broker/request_check.py``)
refuses nulls the schema forbids. This times each step on Produce requests (v9, one
topic) with 1 and with 6 partitions of 10 records of 100 bytes, the hot path, and
reports each in microseconds and as a ratio to kio's body decode, the baseline: the
checks should cost about as much as the decode they guard, not several times it.

Run it::

    .venv/bin/python bench/request_decode.py
    .venv/bin/python bench/request_decode.py --repeat 10 --json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import timeit
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from onceflow.admin.wire import encode_request, request_module
from onceflow.broker.frame_scan import check_body
from onceflow.broker.protocol import _request_codec, build, decode_request
from onceflow.broker.request_check import check_nulls

PRODUCE, VERSION = 0, 9
BATCH = bytes(61 + 10 * 108)  # stands in for a record batch: the broker never opens it here


def produce_frame(partitions: int) -> bytes:
    """A Produce v9 frame (without its size prefix) for ``partitions`` partitions."""
    m = request_module(PRODUCE, VERSION)
    data = tuple(build(m.PartitionProduceData, index=p, records=BATCH) for p in range(partitions))
    request = build(
        m.ProduceRequest,
        transactional_id=None,
        acks=-1,
        timeout=datetime.timedelta(seconds=10),
        topic_data=(build(m.TopicProduceData, name="orders", partition_data=data),),
    )
    return encode_request(request, 1)[4:]


def steps(frame: bytes) -> dict[str, Callable[[], Any]]:
    read_header, read_body, schema = _request_codec(PRODUCE, VERSION)
    _, body_at = read_header(frame, 0)
    request, _ = read_body(frame, body_at)
    return {
        "header (kio)": lambda: read_header(frame, 0),
        "pre-scan": lambda: check_body(frame, body_at, schema),
        "body (kio)": lambda: read_body(frame, body_at),
        "null check": lambda: check_nulls(request),
        "decode_request": lambda: decode_request(frame, PRODUCE, VERSION),
    }


def measure(repeat: int, number: int) -> dict[int, dict[str, float]]:
    """Microseconds per call, best of ``repeat`` rounds, per partition count and step."""
    results: dict[int, dict[str, float]] = {}
    for partitions in (1, 6):
        timed = steps(produce_frame(partitions))
        results[partitions] = {
            name: min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6
            for name, call in timed.items()
        }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the best counts")
    parser.add_argument("--number", type=int, default=20_000, help="calls per round")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    results = measure(args.repeat, args.number)
    if args.json:
        print(json.dumps({"microseconds": results}))
        return 0
    table = Table(title=f"Produce v{VERSION} request, best of {args.repeat} x {args.number:,}")
    for column in ("step", "1 partition µs", "x body", "6 partitions µs", "x body"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for name in results[1]:
        cells = [name]
        for partitions in (1, 6):
            micros = results[partitions][name]
            cells += [f"{micros:.2f}", f"{micros / results[partitions]['body (kio)']:.2f}"]
        table.add_row(*cells)
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
