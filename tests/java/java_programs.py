"""Running the Java test programs (built by ``make java-tests``) as real processes.

Each program prints one JSON object per line on stdout (see ``Out.java``); a
:class:`JavaProgram` reads those events with a deadline, so a hung JVM fails the test
instead of hanging it, and can SIGKILL the JVM or resume it from a pause.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

JAVA_DIR = Path(__file__).parent
TARGET = JAVA_DIR / "target"
CLASSPATH = f"{TARGET / 'classes'}{os.pathsep}{TARGET / 'libs' / '*'}"
PACKAGE = "dev.onceflow.javatests"
EVENT_TIMEOUT = 60.0

Event = dict[str, Any]


def require_built() -> None:
    """Fail the test with one line when the programs were never built."""
    if not (TARGET / "classes" / "dev").is_dir() or not (TARGET / "libs").is_dir():
        pytest.fail("Java test programs are not built: run `make java-tests`", pytrace=False)


class JavaProgram:
    """One JVM running ``dev.onceflow.javatests.<main>``; stderr goes to ``log_path``."""

    def __init__(self, main: str, args: list[str], log_path: Path) -> None:
        require_built()
        self.main = main
        self.log_path = log_path
        self.events: list[Event] = []
        command = [
            "java",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            CLASSPATH,
            f"{PACKAGE}.{main}",
            *args,
        ]
        with open(log_path, "a") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
            )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_lines, daemon=True).start()

    def _read_lines(self) -> None:
        """Runs on a thread: a blocking read per line, so no line waits in a buffer
        while the test waits on the pipe."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _next_event(self, deadline: float) -> Event | None:
        """The next event, or None at end of output; fails at the deadline."""
        try:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            self.kill()
            raise AssertionError(
                f"{self.main}: no output in time after {self.events[-3:]}; " + self._log_tail()
            ) from None
        if line is None:
            return None
        event: Event = json.loads(line)
        self.events.append(event)
        return event

    def wait_for(self, name: str, timeout: float = EVENT_TIMEOUT) -> Event:
        """Read events until one called ``name`` arrives; fail if the program ends first."""
        deadline = time.monotonic() + timeout
        while (event := self._next_event(deadline)) is not None:
            if event["event"] == name:
                return event
        raise AssertionError(f"{self.main} ended before {name!r}; {self._log_tail()}")

    def finish(self, timeout: float = EVENT_TIMEOUT) -> list[Event]:
        """Read to the end of output and check the program exited 0; returns all events."""
        deadline = time.monotonic() + timeout
        while self._next_event(deadline) is not None:
            pass
        code = self.process.wait(max(0.0, deadline - time.monotonic()))
        assert code == 0, f"{self.main} exited {code}; {self._log_tail()}"
        return self.events

    def resume(self) -> None:
        """End a pause (``Out.pause``): the program reads one line from stdin."""
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no close(), no commit."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def named(self, name: str) -> list[Event]:
        return [event for event in self.events if event["event"] == name]

    def _log_tail(self) -> str:
        lines = self.log_path.read_text().splitlines()[-15:] if self.log_path.exists() else []
        return "stderr tail:\n" + "\n".join(lines)
