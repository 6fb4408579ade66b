"""What every example shares: where to connect, which instance this is, when to stop.

The verifier's contract: bootstrap servers in ONCEFLOW_BOOTSTRAP, the instance number
in ONCEFLOW_INSTANCE; the examples take the input and output topics as arguments and
run until SIGTERM.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class App:
    bootstrap: str
    instance: str
    input: str
    output: str
    stop: threading.Event

    def consumer_settings(self, group: str) -> dict[str, object]:
        """A consumer that commits only when told, with a session short enough for
        the verifier's pause fault and a stable member id (fast restarts)."""
        return {
            "bootstrap.servers": self.bootstrap,
            "group.id": group,
            "group.instance.id": f"{group}-{self.instance}",
            "session.timeout.ms": 6000,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }


def app() -> App:
    """The running example's settings; SIGTERM sets ``stop``."""
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: {sys.argv[0]} INPUT_TOPIC OUTPUT_TOPIC")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` shows where it is stuck
    return App(
        os.environ["ONCEFLOW_BOOTSTRAP"], os.environ.get("ONCEFLOW_INSTANCE", "0"),
        sys.argv[1], sys.argv[2], stop,
    )  # fmt: skip
