"""Stopping a helper process that takes the close of its stdin as "finish and exit"."""

from __future__ import annotations

import contextlib
import subprocess


def close_and_wait(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Close ``process``'s stdin and wait up to ``timeout`` seconds for it to exit
    cleanly; SIGKILL it if it has not."""
    if process.poll() is not None or process.stdin is None:
        return
    with contextlib.suppress(BrokenPipeError):
        process.stdin.close()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
