"""Resource limits: connections in total and per address, unanswered requests per
connection; idle connections, a slow loris and a client that never reads do not stop
other clients, and the broker's memory stays bounded (RSS measured)."""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from interop_support import wait_until
from kio.schema.errors import ErrorCode
from wire import WireClient, encode_request, raw_frame, values_batch

from onceflow.testing import BrokerProcess

IDLE_CONNECTIONS = 1000
# What 1,000 idle connections, each announcing a maximal request, may add to the RSS.
RSS_GROWTH_LIMIT_MB = 64
ROUND_TRIPS = 20
# Kernel socket buffers plus the broker's read buffer hold a few MB; far more means the
# broker kept reading a client that never reads its answers.
UNREAD_LIMIT_BYTES = 64 * 1024 * 1024
ROUND_TRIP_LIMIT_SECONDS = 5.0


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


def connect(broker: BrokerProcess, source_ip: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection((broker.host, broker.port), 10, (source_ip, 0))


def served(broker: BrokerProcess, source_ip: str = "127.0.0.1") -> bool:
    """Whether a new connection from ``source_ip`` gets an answer."""
    with connect(broker, source_ip) as sock:
        try:
            sock.sendall(raw_frame(18, 0, 1))
            return len(sock.recv(4)) == 4
        except ConnectionError:
            return False


def well_behaved_round_trips(broker: BrokerProcess) -> float:
    """Produce and fetch ROUND_TRIPS times; returns the slowest round trip."""
    slowest = 0.0
    with WireClient.connect(broker.bootstrap) as client:
        client.ensure_topic("served")
        base = client.latest_offset("served", 0)
        for i in range(ROUND_TRIPS):
            started = time.monotonic()
            answer = client.produce("served", 0, values_batch([b"%d" % i]))
            assert answer.error_code == ErrorCode.none
            assert client.fetch("served", 0, base + i).error_code == ErrorCode.none
            slowest = max(slowest, time.monotonic() - started)
    return slowest


@pytest.fixture
def slow_loris(onceflow_broker_process: BrokerProcess) -> Iterator[threading.Event]:
    """A client sending one byte of a request at a time, slowly, until told to stop."""
    stop = threading.Event()
    frame = raw_frame(18, 0, 1)

    def trickle() -> None:
        with connect(onceflow_broker_process) as sock:
            for byte in frame * 100:
                if stop.wait(0.1):
                    return
                sock.send(bytes([byte]))

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    yield stop
    stop.set()
    thread.join(5)


def test_idle_connections_and_a_slow_loris_do_not_stop_other_clients(
    onceflow_broker_process: BrokerProcess, slow_loris: threading.Event
) -> None:
    broker = onceflow_broker_process
    well_behaved_round_trips(broker)  # warm up before measuring
    before = rss_mb(broker.pid)
    with ExitStack() as stack:
        for _ in range(IDLE_CONNECTIONS):
            sock = stack.enter_context(connect(broker))
            # Announce the largest request allowed, then send nothing more.
            sock.sendall(struct.pack(">i", 100 * 1024 * 1024) + b"\0")
        assert well_behaved_round_trips(broker) < ROUND_TRIP_LIMIT_SECONDS
        growth = rss_mb(broker.pid) - before
    print(f"\nRSS growth with {IDLE_CONNECTIONS} idle connections: {growth:.1f} MB")
    assert growth < RSS_GROWTH_LIMIT_MB


def test_connection_limits_in_total_and_per_address(
    onceflow_broker_process_factory: Callable[..., BrokerProcess],
) -> None:
    broker = onceflow_broker_process_factory(
        extra_args=("--max-connections", "8", "--max-connections-per-ip", "5")
    )
    with ExitStack() as stack:
        for _ in range(5):
            stack.enter_context(connect(broker, "127.0.0.2"))
        assert not served(broker, "127.0.0.2")  # a 6th from that address
        assert served(broker, "127.0.0.1")  # others are still served
        for _ in range(3):
            stack.enter_context(connect(broker, "127.0.0.3"))
        assert not served(broker, "127.0.0.4")  # 8 open in total
    # Closing them frees the slots, once the broker has seen them go.
    wait_until(lambda: served(broker, "127.0.0.4"), 10, "a slot freed by closing")


def test_a_client_that_never_reads_stalls_only_itself(
    onceflow_broker_process_factory: Callable[..., BrokerProcess],
) -> None:
    broker = onceflow_broker_process_factory(extra_args=("--max-inflight-requests", "10"))
    well_behaved_round_trips(broker)
    with WireClient.connect(broker.bootstrap) as client:
        client.ensure_topic("big")
        answer = client.produce("big", 0, values_batch([b"x" * 1000] * 900))
        assert answer.error_code == ErrorCode.none
    before = rss_mb(broker.pid)
    with connect(broker) as greedy:
        greedy.setblocking(False)
        # Fetches of a ~1 MB batch: small requests whose answers fill the socket fast.
        requests = encode_request(WireClient.fetch_request("big", 0, 0), 1) * 1000
        sent = 0
        # Until the socket stays full for a second: the broker has stopped reading
        # (its own read buffer fills first, so a full socket can still drain a while).
        while select.select([], [greedy], [], 1.0)[1]:
            with contextlib.suppress(BlockingIOError):
                sent += greedy.send(requests)
            assert sent < UNREAD_LIMIT_BYTES, "the broker kept reading a client that never reads"
        assert well_behaved_round_trips(broker) < ROUND_TRIP_LIMIT_SECONDS
        growth = rss_mb(broker.pid) - before
    print(f"\nsent {sent} bytes unread; RSS growth {growth:.1f} MB")
    assert growth < RSS_GROWTH_LIMIT_MB
