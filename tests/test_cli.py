"""The ``onceflow`` command as users run it: real processes, real signals, real ports."""

from __future__ import annotations

import re
import selectors
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

START_TIMEOUT = 30.0
EXIT_TIMEOUT = 30.0
EXIT_USAGE = 2
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
ENTRY_POINT = Path(sys.executable).with_name("onceflow")

Launch = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Start ``python -m onceflow broker`` with extra arguments; killed after the test."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, data_dir: Path | None = None) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "onceflow", "broker", "--port", "0"]
        command += ["--data-dir", str(data_dir or tmp_path / "data"), *args]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=EXIT_TIMEOUT)


def first_line(process: subprocess.Popen[str], timeout: float = START_TIMEOUT) -> str:
    """The first stdout line, or "" if none came before ``timeout`` or the process exited."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return process.stdout.readline()


def listening_port(process: subprocess.Popen[str]) -> int:
    line = first_line(process)
    match = LISTENING.search(line)
    assert match is not None, f"unexpected first line {line!r}"
    port = int(match.group(1))
    assert port > 0
    return port


def assert_one_line_error(process: subprocess.Popen[str], *fragments: str) -> None:
    """Exit code 2 and a single human-readable line on stderr, no traceback."""
    out, err = process.communicate(timeout=EXIT_TIMEOUT)
    assert process.returncode == EXIT_USAGE, (process.returncode, out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    for fragment in fragments:
        assert fragment in lines[0]
    assert "listening" not in out


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_broker_serves_until_signalled(launch: Launch, stop_signal: signal.Signals) -> None:
    broker = launch()
    port = listening_port(broker)
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        pass
    broker.send_signal(stop_signal)
    out, err = broker.communicate(timeout=EXIT_TIMEOUT)
    assert broker.returncode == 0, err
    assert out.strip().splitlines() == ["onceflow broker stopped"]
    assert "Traceback" not in err
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=10).close()


def test_port_in_use(launch: Launch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = launch("--port", str(port))
        assert_one_line_error(broker, "cannot listen", str(port))


def test_data_dir_under_a_regular_file(launch: Launch, tmp_path: Path) -> None:
    # Tests run as root, which ignores permission bits: a file in the path stops root too.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    broker = launch(data_dir=blocker / "data")
    assert_one_line_error(broker, "data dir", str(blocker))


def test_second_broker_on_the_same_data_dir(launch: Launch, tmp_path: Path) -> None:
    first = launch()
    port = listening_port(first)
    second = launch(data_dir=tmp_path / "data")
    assert_one_line_error(second, "in use")
    # The refused start must not have disturbed the running broker.
    assert first.poll() is None
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        pass
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=EXIT_TIMEOUT)
    assert first.returncode == 0


def test_invalid_port_is_a_usage_error(launch: Launch) -> None:
    broker = launch("--port", "70000")
    _, err = broker.communicate(timeout=EXIT_TIMEOUT)
    assert broker.returncode == EXIT_USAGE
    assert "port must be 0-65535" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("args", [["--help"], ["broker", "--help"]], ids=["top", "broker"])
def test_help(args: list[str]) -> None:
    assert ENTRY_POINT.exists(), f"console script missing at {ENTRY_POINT}"
    result = subprocess.run(
        [str(ENTRY_POINT), *args], capture_output=True, text=True, timeout=EXIT_TIMEOUT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: onceflow")
    if args[0] == "broker":
        assert "--data-dir" in result.stdout and "--segment-bytes" in result.stdout
    else:
        assert "broker" in result.stdout
