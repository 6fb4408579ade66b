"""Prometheus metrics of one broker, served over HTTP on ``metrics_port``.

The hot path only increments counters, once per request and once per partition of a
produce or fetch (never per record: record counts come from batch headers). State
such as high watermarks, open transactions and groups is read at scrape time by a
collector that runs on the broker's event loop, the only thread that may touch it.
Each broker has its own registry, so several brokers in one process do not clash.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import struct
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from onceflow.broker.records import ATTRIBUTES_OFFSET, CONTROL_BIT, HEADER_SIZE, LOG_OVERHEAD
from onceflow.broker.transactions import PREPARED, TxnState

log = logging.getLogger(__name__)

PRODUCE_KEY = 0
FETCH_KEY = 1
# Batch header: the length after baseOffset, and the record count near its end.
_BATCH_LENGTH = struct.Struct(">i")
_LENGTH_OFFSET = 8
_RECORD_COUNT = struct.Struct(">i")
_RECORD_COUNT_OFFSET = 57
#: How long a scrape waits for the event loop before serving the counters alone.
SNAPSHOT_TIMEOUT_SECONDS = 5.0
# Group-commit rounds: powers of two up to far more appends than one round ever holds.
_ROUND_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_OPEN_TXN_STATES = frozenset({TxnState.ONGOING, *PREPARED})


def batch_records(records: bytes | memoryview, *, skip_control: bool = False) -> int:
    """Records in the whole batches of ``records``, read from batch headers only."""
    count = 0
    pos = 0
    end = len(records)
    while pos + HEADER_SIZE <= end:
        size = _BATCH_LENGTH.unpack_from(records, pos + _LENGTH_OFFSET)[0] + LOG_OVERHEAD
        if size < HEADER_SIZE or pos + size > end:
            break  # a fetch may end in a partial batch; a bad produce is refused anyway
        if not (skip_control and records[pos + ATTRIBUTES_OFFSET + 1] & CONTROL_BIT):
            count += _RECORD_COUNT.unpack_from(records, pos + _RECORD_COUNT_OFFSET)[0]
        pos += size
    return count


class BrokerMetrics:
    """The broker's metrics and the hooks that feed them.

    The broker calls ``observe_request`` for every answered request, ``observe_failure``
    for a request whose handler raised, and ``observe_flush_round`` after each group
    commit fsync round; ``serve``/``close`` run the HTTP endpoint.
    """

    def __init__(self, broker: Any) -> None:
        self.registry = CollectorRegistry()
        self._server: Any = None
        self._thread: Any = None
        self.port: int | None = None
        r = self.registry
        self._requests = Counter(
            "onceflow_broker_requests", "Requests answered, per API.", ["api"], registry=r
        )
        self._errors = Counter(
            "onceflow_broker_request_errors",
            "Non-zero error codes in responses (top level, and per partition for Produce "
            "and Fetch), per API and error; error=internal for a handler that failed.",
            ["api", "error"],
            registry=r,
        )
        self._latency = Histogram(
            "onceflow_broker_request_seconds",
            "Time from decoding a request to its response being ready (includes fsync "
            "waits and Fetch long polls), per API.",
            ["api"],
            registry=r,
        )
        topic = ["topic"]
        self._bytes_in = Counter(
            "onceflow_broker_topic_bytes_in", "Record bytes appended by Produce.", topic, registry=r
        )
        self._records_in = Counter(
            "onceflow_broker_topic_records_in", "Records appended by Produce.", topic, registry=r
        )
        self._bytes_out = Counter(
            "onceflow_broker_topic_bytes_out", "Record bytes sent by Fetch.", topic, registry=r
        )
        self._records_out = Counter(
            "onceflow_broker_topic_records_out",
            "Records sent by Fetch (control markers not counted).",
            topic,
            registry=r,
        )
        self._fsync = Histogram(
            "onceflow_broker_fsync_seconds",
            "Duration of one group-commit fsync round (all its files synced concurrently).",
            registry=r,
        )
        self._round_files = Histogram(
            "onceflow_broker_fsync_round_files",
            "Files synced by one group-commit round.",
            buckets=_ROUND_SIZE_BUCKETS,
            registry=r,
        )
        self._round_appends = Histogram(
            "onceflow_broker_fsync_round_appends",
            "Durability requests (appends awaiting fsync) one group-commit round served.",
            buckets=_ROUND_SIZE_BUCKETS,
            registry=r,
        )
        r.register(_StateCollector(broker))
        # labels() takes a lock and builds a key: cache the children the hot path uses.
        self._per_api: dict[str, tuple[Any, Any]] = {}
        self._per_topic: dict[str, tuple[Any, Any, Any, Any]] = {}

    # -- hooks (event loop) ------------------------------------------------------

    def observe_request(
        self, api_key: int, api: str, request: Any, response: Any, seconds: float
    ) -> None:
        """Count one answered request; ``response`` is None for a produce with acks=0."""
        children = self._per_api.get(api)
        if children is None:
            children = self._per_api[api] = (
                self._requests.labels(api),
                self._latency.labels(api),
            )
        children[0].inc()
        children[1].observe(seconds)
        code = getattr(response, "error_code", 0)
        if code:
            self._count_error(api, code)
        if api_key == PRODUCE_KEY:
            self._observe_produce(request, response)
        elif api_key == FETCH_KEY:
            self._observe_fetch(response)

    def observe_failure(self, api: str) -> None:
        """A handler raised: the connection is closed without an answer."""
        self._errors.labels(api, "internal").inc()

    def observe_flush_round(self, seconds: float, files: int, appends: int) -> None:
        self._fsync.observe(seconds)
        self._round_files.observe(files)
        self._round_appends.observe(appends)

    def _count_error(self, api: str, code: Any) -> None:
        self._errors.labels(api, getattr(code, "name", str(code))).inc()

    def _topic(self, name: str) -> tuple[Any, Any, Any, Any]:
        children = self._per_topic.get(name)
        if children is None:
            children = self._per_topic[name] = (
                self._bytes_in.labels(name),
                self._records_in.labels(name),
                self._bytes_out.labels(name),
                self._records_out.labels(name),
            )
        return children

    def _observe_produce(self, request: Any, response: Any) -> None:
        refused: set[tuple[str, int]] = set()
        if response is not None:
            for topic in response.responses:
                for part in topic.partition_responses:
                    if part.error_code:
                        refused.add((topic.name, part.index))
                        self._count_error("Produce", part.error_code)
        for topic in request.topic_data:
            bytes_in, records_in, _, _ = self._topic(topic.name)
            for data in topic.partition_data:
                if data.records and (topic.name, data.index) not in refused:
                    bytes_in.inc(len(data.records))
                    records_in.inc(batch_records(data.records))

    def _observe_fetch(self, response: Any) -> None:
        for topic in response.responses:
            _, _, bytes_out, records_out = self._topic(topic.topic)
            for part in topic.partitions:
                if part.error_code:
                    self._count_error("Fetch", part.error_code)
                elif part.records:
                    bytes_out.inc(len(part.records))
                    records_out.inc(batch_records(part.records, skip_control=True))

    # -- HTTP endpoint ---------------------------------------------------------------

    def serve(self, host: str, port: int) -> None:
        """Start serving ``/metrics`` on a thread; port 0 picks a free one (see ``port``).
        Raises OSError when the address cannot be bound."""
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = self._server.server_port

    async def close(self) -> None:
        """Stop the HTTP endpoint (shutdown blocks up to its poll interval: off the loop)."""
        server, self._server = self._server, None
        if server is None:
            return
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        self._thread.join()


class _StateCollector(Collector):
    """Gauges of broker state, read on the broker's event loop at scrape time."""

    def __init__(self, broker: Any) -> None:
        self._broker = broker

    def collect(self) -> Iterator[Metric]:
        loop = self._broker.loop
        if loop is None or loop.is_closed():
            return iter(())
        try:
            future = asyncio.run_coroutine_threadsafe(self._snapshot(), loop)
        except RuntimeError as exc:  # the loop is shutting down
            log.warning("metrics: broker state not read: %s", exc)
            return iter(())
        try:
            return iter(future.result(SNAPSHOT_TIMEOUT_SECONDS))
        except concurrent.futures.TimeoutError:
            # A stuck loop: serve the counters rather than fail the scrape.
            future.cancel()
            log.warning("metrics: broker state not read within %ss", SNAPSHOT_TIMEOUT_SECONDS)
            return iter(())

    async def _snapshot(self) -> list[Metric]:
        broker = self._broker
        if not broker.serving:
            return []
        partition_labels = ["topic", "partition"]
        hw = GaugeMetricFamily(
            "onceflow_broker_partition_high_watermark",
            "High watermark: offsets below it are visible to read_uncommitted consumers.",
            labels=partition_labels,
        )
        lso = GaugeMetricFamily(
            "onceflow_broker_partition_last_stable_offset",
            "Last stable offset: where read_committed consumers stop (the first offset of "
            "the earliest open transaction, else the high watermark).",
            labels=partition_labels,
        )
        for name, topic in broker.topics.topics.items():
            for index, partition in enumerate(topic.partitions):
                hw.add_metric([name, str(index)], partition.high_watermark)
                lso.add_metric([name, str(index)], partition.last_stable_offset)
        started = [
            txn.started_ms
            for txn in broker.transactions.describe()
            if txn.state in _OPEN_TXN_STATES
        ]
        open_txns = GaugeMetricFamily(
            "onceflow_broker_open_transactions",
            "Transactions ongoing or prepared but not yet completed.",
            value=len(started),
        )
        oldest = GaugeMetricFamily(
            "onceflow_broker_oldest_transaction_age_seconds",
            "Age of the oldest open transaction (0 when none is open).",
            value=max(0.0, time.time() - min(started) / 1000) if started else 0.0,
        )
        groups = GaugeMetricFamily(
            "onceflow_broker_groups", "Consumer groups known, per state.", labels=["state"]
        )
        members = GaugeMetricFamily(
            "onceflow_broker_group_members", "Members of each live group.", labels=["group"]
        )
        by_state: dict[str, int] = {}
        for info in broker.groups.list_groups():
            by_state[info.state.value] = by_state.get(info.state.value, 0) + 1
            if info.members:
                members.add_metric([info.group_id], len(info.members))
        for state, count in sorted(by_state.items()):
            groups.add_metric([state], count)
        return [hw, lso, open_txns, oldest, groups, members]
