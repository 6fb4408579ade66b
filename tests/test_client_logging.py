"""librdkafka's log lines go through Python logging: never raw onto the terminal, and
shown (as log records of ``onceflow.librdkafka``) at ``--log-level DEBUG``.

librdkafka logs when a broker is unreachable, so the test runs ``onceflow verify``
against a bootstrap address whose first connection is dropped and which is refused
until a real broker process starts there.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

from onceflow.testing import BrokerProcess

RAW_LIBRDKAFKA_LINE = re.compile(r"^%\d\|", re.MULTILINE)
TIMEOUT = 120.0


def verify_through_an_outage(tmp_path: Path, log_level: str) -> str:
    """stdout and stderr of a short ``onceflow verify`` whose broker is briefly down."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        output = tmp_path / f"verify-{log_level}.out"
        with open(output, "w") as sink:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "onceflow", "--log-level", log_level, "verify",
                    "--bootstrap", f"127.0.0.1:{port}", "--guarantee", "at-most-once",
                    "--orders", "20", "--fault", "none",
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        listener.settimeout(TIMEOUT)
        # The first client to connect (verify's own admin client) is cut off at once.
        connection, _ = listener.accept()
        connection.close()
    broker = BrokerProcess(tmp_path / f"data-{log_level}", port=port)
    try:
        broker.start()
        assert process.wait(TIMEOUT) == 0, output.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        broker.stop()
    return output.read_text()


def test_no_raw_librdkafka_lines_by_default(tmp_path: Path) -> None:
    output = verify_through_an_outage(tmp_path, "WARNING")
    assert "pass" in output
    assert not RAW_LIBRDKAFKA_LINE.search(output), output
    assert "onceflow.librdkafka" not in output


def test_librdkafka_lines_are_log_records_at_debug(tmp_path: Path) -> None:
    output = verify_through_an_outage(tmp_path, "DEBUG")
    assert not RAW_LIBRDKAFKA_LINE.search(output), output
    routed = [line for line in output.splitlines() if " onceflow.librdkafka: " in line]
    assert routed, output
    # confluent-kafka formats them as "FACILITY [client name] message".
    assert any(re.search(r"onceflow\.librdkafka: \w+ \[rdkafka#\w+-\d+\] ", r) for r in routed)
