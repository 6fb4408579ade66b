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


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """The process's resident memory now (or, with ``VmHWM``, its peak)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} line")


def reset_peak_rss(pid: int) -> None:
    """Start VmHWM afresh from the current RSS (Linux's clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


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


READ_TIMEOUT_MS = 1000
# One byte this often: the request would take ~10 s to arrive whole.
TRICKLE_SECONDS = 0.25


def test_a_slow_client_is_closed_after_the_read_timeout_while_others_are_served(
    onceflow_broker_process_factory: Callable[..., BrokerProcess],
) -> None:
    broker = onceflow_broker_process_factory(
        extra_args=("--request-read-timeout-ms", str(READ_TIMEOUT_MS))
    )
    well_behaved_round_trips(broker)
    frame = raw_frame(18, 0, 1, b"\0" * 32)
    with connect(broker) as idle, connect(broker) as slow:
        started = time.monotonic()
        slow.sendall(frame[:6])  # the size prefix and some of the header
        sent = 6
        closed_after = None
        while sent < len(frame):
            # Meanwhile another client is served, and an idle one is left alone.
            assert well_behaved_round_trips(broker) < ROUND_TRIP_LIMIT_SECONDS
            readable, _, _ = select.select([slow], [], [], TRICKLE_SECONDS)
            if readable:
                with contextlib.suppress(ConnectionError):
                    assert slow.recv(1) == b""
                closed_after = time.monotonic() - started
                break
            with contextlib.suppress(ConnectionError):
                slow.send(frame[sent : sent + 1])
            sent += 1
        assert closed_after is not None, "the slow client was never closed"
        assert sent < len(frame)
        assert READ_TIMEOUT_MS / 1000 <= closed_after < 4 * READ_TIMEOUT_MS / 1000
        print(f"\nslow client closed after {closed_after:.2f} s, {sent}/{len(frame)} bytes")
        # The idle connection (between requests, no deadline) is still served.
        idle.sendall(raw_frame(18, 0, 2))
        assert len(idle.recv(4)) == 4
    lines = broker.log_path.read_text().splitlines()
    assert any("request.read.timeout.ms=1000" in line for line in lines), lines


LARGE_CLIENTS = 24
LARGE_REQUEST_BYTES = 12 * 1024 * 1024
LARGE_ROUNDS = 3
QUEUED_MAX_REQUEST_BYTES = 8 * 1024 * 1024
# Unbounded, 24 requests of 12 MB being read at once grow the RSS by several hundred
# MB; bounded, by the bound, one request over it and the streams' read-ahead.
LARGE_RSS_GROWTH_LIMIT_MB = 150
LARGE_RUN_LIMIT_SECONDS = 120.0


def _read_answer(sock: socket.socket) -> bytes:
    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            assert chunk, "the broker closed the connection"
            data += chunk
        return data

    (size,) = struct.unpack(">i", exactly(4))
    return exactly(size)


def test_many_large_requests_at_once_keep_the_broker_memory_bounded(
    onceflow_broker_process_factory: Callable[..., BrokerProcess],
) -> None:
    broker = onceflow_broker_process_factory(
        extra_args=("--queued-max-request-bytes", str(QUEUED_MAX_REQUEST_BYTES))
    )
    well_behaved_round_trips(broker)
    before = rss_mb(broker.pid)
    reset_peak_rss(broker.pid)
    # To a topic that does not exist: the broker reads and decodes each request whole
    # but answers it cheaply, so memory is all the test measures.
    with WireClient.connect(broker.bootstrap) as client:
        request = client.produce_request("nowhere", 0, b"\0" * LARGE_REQUEST_BYTES)
    frame = encode_request(request, 1)
    answered = []
    failures: list[BaseException] = []

    def send_large() -> None:
        try:
            with connect(broker) as sock:
                sock.settimeout(LARGE_RUN_LIMIT_SECONDS)
                for _ in range(LARGE_ROUNDS):
                    sock.sendall(frame)
                    answered.append(_read_answer(sock))
        except BaseException as exc:
            failures.append(exc)

    senders = [threading.Thread(target=send_large) for _ in range(LARGE_CLIENTS)]
    for sender in senders:
        sender.start()
    slowest = 0.0
    deadline = time.monotonic() + LARGE_RUN_LIMIT_SECONDS
    while any(s.is_alive() for s in senders) and time.monotonic() < deadline:
        slowest = max(slowest, well_behaved_round_trips(broker))
    for sender in senders:
        sender.join(LARGE_RUN_LIMIT_SECONDS)
    peak = rss_mb(broker.pid, "VmHWM")
    assert not failures, failures
    assert len(answered) == LARGE_CLIENTS * LARGE_ROUNDS
    growth = peak - before
    print(
        f"\n{LARGE_CLIENTS} clients x {LARGE_ROUNDS} requests of {LARGE_REQUEST_BYTES >> 20}"
        f" MB: peak RSS growth {growth:.1f} MB, slowest other round trip {slowest:.2f} s"
    )
    assert growth < LARGE_RSS_GROWTH_LIMIT_MB
    assert slowest < ROUND_TRIP_LIMIT_SECONDS
