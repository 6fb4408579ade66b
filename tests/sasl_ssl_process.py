"""A broker process whose only listener is SASL_SSL (self-signed CA), its users, and the
client settings that reach it; with ``onceflow(...)``, the command as a user runs it.
Shared by the tests that drive the command line, the runtime and verify over SASL_SSL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from onceflow.testing import BrokerProcess

TIMEOUT = 60.0


def onceflow(
    *args: str, stdin: str = "", timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """``python -m onceflow ARGS`` with ``stdin``; its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "onceflow", *args],
        input=stdin, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def start(root: Path, *extra_args: str) -> BrokerProcess:
    """A started broker process with one SASL_SSL listener; its CA is ``ca_file``."""
    return BrokerProcess(
        root / "data",
        extra_args=("--listener", "SASL_SSL://127.0.0.1:0", "--tls-self-signed",
                    str(root / "tls"), *extra_args),
    ).start()  # fmt: skip


def ca_file(broker: BrokerProcess) -> Path:
    return broker.data_dir.parent / "tls" / "ca.pem"


def add_user(broker: BrokerProcess, name: str, password: str, *extra: str) -> None:
    """``onceflow users add NAME`` in the broker's data dir (the broker sees it at once)."""
    added = onceflow("users", "add", name, "--data-dir", str(broker.data_dir), *extra,
                     stdin=password + "\n")  # fmt: skip
    assert added.returncode == 0, added.stderr


def settings(
    broker: BrokerProcess, user: str, password: str, mechanism: str = "SCRAM-SHA-512"
) -> dict[str, str]:
    """librdkafka settings (no bootstrap.servers) for logging in as ``user``."""
    return {
        "security.protocol": "SASL_SSL", "sasl.mechanism": mechanism,
        "sasl.username": user, "sasl.password": password,
        "ssl.ca.location": str(ca_file(broker)),
    }  # fmt: skip
