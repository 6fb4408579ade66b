"""An ``onceflow broker`` running as a separate OS process, for tests that kill it."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

_LISTENING = re.compile(r"listening on (\S+):(\d+)")
START_TIMEOUT = 30.0


class BrokerProcess:
    """Start, kill -9 and restart a broker process on one data dir.

    A restart reuses the port of the first start, so clients configured with the
    bootstrap address reconnect to the new incarnation by themselves.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        flush: str = "always",
        port: int = 0,
        extra_args: tuple[str, ...] = (),
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.flush = flush
        self.port = port
        self.extra_args = extra_args
        self.log_path = log_path or self.data_dir.parent / f"{self.data_dir.name}-broker.log"
        self.host = "127.0.0.1"
        #: Extra environment variables for the process (e.g. injected disk faults).
        self.env = env or {}
        self.process: subprocess.Popen[str] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "broker process is not running"
        return self.process.pid

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "onceflow", "broker",
            "--host", self.host, "--port", str(self.port),
            "--data-dir", str(self.data_dir), "--flush", self.flush,
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> BrokerProcess:
        """Start the process and wait until it accepts connections."""
        assert self.process is None or self.process.poll() is not None, "already running"
        log = open(self.log_path, "a")  # noqa: SIM115 - handed to the child process
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
            env={**os.environ, **self.env},
        )
        log.close()
        line = self._read_line(START_TIMEOUT)
        match = _LISTENING.search(line)
        if match is None:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(
                f"broker did not start: {line.strip() or 'no output'}; see {self.log_path}"
            )
        self.port = int(match.group(2))
        return self

    def _read_line(self, timeout: float) -> str:
        assert self.process is not None and self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                return ""
        return self.process.stdout.readline()

    def kill(self) -> None:
        """SIGKILL: no flush, no clean shutdown."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the clean shutdown; returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def restart(self) -> BrokerProcess:
        self.stop()
        return self.start()

    def wait_until_dead(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.process is not None and self.process.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"broker pid {self.process.pid} still alive")
            time.sleep(0.05)

    def __enter__(self) -> BrokerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
