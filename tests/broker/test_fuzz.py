"""Protocol fuzzer: structured, mutated and random requests against a broker process that
must never crash or log a traceback, and keeps serving a well-behaved client meanwhile.

Each hypothesis example is a list of cases pipelined on one connection, each followed by
a sentinel (ApiVersions v0 with its own correlation id): the sentinel's answer proves the
broker processed the case before it (answers come in request order), so the cases run
are counted exactly. ``ONCEFLOW_FUZZ_EXAMPLES`` sets the number of examples (CI default
below; tools/fuzz_broker.sh runs longer).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fuzz_cases import Corpus, a_case, every_api_version
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode
from wire import WireClient, raw_frame, values_batch

from onceflow.testing import BrokerProcess

EXAMPLES = int(os.environ.get("ONCEFLOW_FUZZ_EXAMPLES", "1700"))
CASES_PER_EXAMPLE = 60
SENTINEL_BASE = 0x5EED0000
# How long a connection may take to answer its last sentinel: only a case that parks
# (a long poll, a join waiting for a rebalance) takes more than a few milliseconds.
ANSWER_DEADLINE = 2.0
# The well-behaved client's round trip must stay below this throughout (slow CI boxes).
CANARY_MAX_LATENCY = 5.0
_SIZE = struct.Struct(">i")


@dataclass
class Tally:
    cases_run: int = 0
    connections: int = 0
    closed_by_broker: int = 0
    #: Connections given up on at the deadline (a case that parks, or that swallowed
    #: the next sentinel with a wrong size prefix).
    timed_out: int = 0


def run_pipelined(bootstrap: str, cases: list[bytes], tally: Tally) -> None:
    """Run every case once: pipelined, each followed by a sentinel, on as few connections
    as the broker allows (it closes one on a case it cannot answer; the rest of the
    cases then go on a new connection)."""
    framed = [c for c in cases if _SIZE.unpack_from(c)[0] == len(c) - 4]
    done = 0
    while done < len(framed):
        answered = _run_on_one_connection(bootstrap, framed[done:], tally)
        # The case after the last one vouched for closed the connection (or parked past
        # the deadline): it ran too.
        done += min(answered + 1, len(framed) - done)
    for case in cases:
        if _SIZE.unpack_from(case)[0] != len(case) - 4:
            _run_misframed(bootstrap, case, tally)
    tally.cases_run += len(cases)


def _run_misframed(bootstrap: str, case: bytes, tally: Tally) -> None:
    """A case whose size prefix lies runs alone: whatever followed it would be read as
    its rest. The end of the stream then makes the broker give up on it."""
    host, _, port = bootstrap.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=ANSWER_DEADLINE) as sock:
        tally.connections += 1
        with contextlib.suppress(OSError):
            sock.sendall(case)
            sock.shutdown(socket.SHUT_WR)
        _read_sentinels(sock, 1, tally)


def _run_on_one_connection(bootstrap: str, cases: list[bytes], tally: Tally) -> int:
    host, _, port = bootstrap.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=ANSWER_DEADLINE) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = b"".join(
            case + raw_frame(18, 0, SENTINEL_BASE + i) for i, case in enumerate(cases)
        )
        tally.connections += 1
        # Sent from a thread: the broker may stop reading (in-flight limit) until we read.
        sender = threading.Thread(target=_send_all, args=(sock, stream), daemon=True)
        sender.start()
        answered = _read_sentinels(sock, len(cases), tally)
        sock.shutdown(socket.SHUT_RDWR)
        sender.join(ANSWER_DEADLINE)
    return answered


def _send_all(sock: socket.socket, data: bytes) -> None:
    # The broker closing the connection on a bad case is expected.
    with contextlib.suppress(OSError):
        sock.sendall(data)


def _read_sentinels(sock: socket.socket, expected: int, tally: Tally) -> int:
    """Read answers until the last sentinel, the broker's close or the deadline; returns
    how many cases a sentinel vouched for."""
    buffer = b""
    answered = 0
    deadline = time.monotonic() + ANSWER_DEADLINE
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        while answered < expected:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                tally.timed_out += 1
                return answered
            try:
                chunk = sock.recv(1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                tally.closed_by_broker += 1
                return answered
            buffer += chunk
            while len(buffer) >= 8:
                (size,) = _SIZE.unpack_from(buffer)
                if len(buffer) < 4 + size:
                    break
                (correlation_id,) = _SIZE.unpack_from(buffer, 4)
                buffer = buffer[4 + size :]
                if SENTINEL_BASE <= correlation_id < SENTINEL_BASE + expected:
                    answered = correlation_id - SENTINEL_BASE + 1
    return answered


@pytest.fixture
def canary(onceflow_broker_process: BrokerProcess) -> Iterator[Callable[[], list[str]]]:
    """A well-behaved client producing and fetching on its own connection meanwhile;
    yields a function returning its failures so far."""
    failures: list[str] = []
    stop = threading.Event()
    broker = onceflow_broker_process

    def serve() -> None:
        with WireClient.connect(broker.bootstrap, timeout=CANARY_MAX_LATENCY) as client:
            client.ensure_topic("canary")
            expected = 0
            while not stop.is_set():
                started = time.monotonic()
                try:
                    answer = client.produce("canary", 0, values_batch([b"alive"]))
                    data = client.fetch("canary", 0, expected)
                except Exception as exc:  # any failure is the finding
                    failures.append(f"canary request failed: {exc!r}")
                    return
                if answer.error_code != ErrorCode.none or answer.base_offset != expected:
                    failures.append(f"canary produce answered {answer}")
                    return
                if data.high_watermark != expected + 1:
                    failures.append(f"canary fetch answered {data}")
                    return
                expected += 1
                if (latency := time.monotonic() - started) > CANARY_MAX_LATENCY:
                    failures.append(f"canary round trip took {latency:.1f}s")
                stop.wait(0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield lambda: list(failures)
    stop.set()
    thread.join(CANARY_MAX_LATENCY * 3)


# 100,000 cases take two to three minutes on a loaded two-core box.
@pytest.mark.timeout(900)
def test_fuzzed_requests_never_crash_the_broker(
    onceflow_broker_process: BrokerProcess, canary: Callable[[], list[str]], tmp_path: Path
) -> None:
    broker = onceflow_broker_process
    tally = Tally()
    corpus = Corpus()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        # No shrinking: a failure is reported as found, and found fast.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(a_case(corpus), min_size=CASES_PER_EXAMPLE, max_size=CASES_PER_EXAMPLE))
    def fuzz(cases: list[bytes]) -> None:
        run_pipelined(broker.bootstrap, cases, tally)
        assert broker.process is not None and broker.process.poll() is None, "broker died"

    started = time.monotonic()

    @settings(max_examples=1, deadline=None, database=None, phases=[Phase.generate])
    @given(every_api_version())
    def seed(frames: list[bytes]) -> None:
        for slot, frame in enumerate(frames):
            corpus.add(frame, slot)
        run_pipelined(broker.bootstrap, frames, tally)

    seed()
    fuzz()
    elapsed = time.monotonic() - started
    print(
        f"\nfuzz: {tally.cases_run} cases on {tally.connections} connections "
        f"({tally.closed_by_broker} closed by the broker, {tally.timed_out} timed out) "
        f"in {elapsed:.0f}s"
    )
    assert canary() == []
    with WireClient.connect(broker.bootstrap) as client:
        assert client.api_versions().error_code == ErrorCode.none
    log = broker.log_path.read_bytes().decode("utf-8")  # fully readable: strict UTF-8
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
    assert "Logging error" not in log
    assert tally.cases_run >= EXAMPLES * CASES_PER_EXAMPLE
