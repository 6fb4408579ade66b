"""A small JSON file that a running broker reads and command-line tools edit.

Each edit is a read-modify-write under an exclusive lock, replaced atomically; readers
reload the file only when its inode, mtime or size changed, so checking it on every
login or request costs one ``stat``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from onceflow.broker.log.atomic import read_json, write_json_atomically

T = TypeVar("T")


class SharedFileError(Exception):
    """The file cannot be read, written or decoded; the message is for humans."""


class SharedJsonFile(Generic[T]):
    """``path`` holding ``{"version": N, ...}``, decoded to and encoded from a ``T``.

    ``error`` (a SharedFileError) is raised when the file cannot be read, written or
    decoded.
    """

    def __init__(
        self,
        path: Path,
        *,
        version: int,
        decode: Callable[[dict[str, Any]], T],
        encode: Callable[[T], dict[str, Any]],
        empty: Callable[[], T],
        error: type[SharedFileError],
        mode: int = 0o644,
    ) -> None:
        self.path = Path(path)
        self._version = version
        self._decode = decode
        self._encode = encode
        self._empty = empty
        self._error = error
        self._mode = mode
        self._value: T = empty()
        self._stamp: tuple[int, int, int] | None = None

    def read(self) -> T:
        """The value as the file holds it now (empty when there is no file)."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            self._value, self._stamp = self._empty(), None
            return self._value
        except OSError as exc:
            raise self._error(f"cannot read {self.path}: {exc.strerror}") from exc
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            self._value = self._load()
            self._stamp = stamp
        return self._value

    @contextlib.contextmanager
    def editing(self) -> Iterator[T]:
        """The current value, to change in place; written back when the block ends."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise self._error(f"cannot write {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            value = self._load()
            yield value
            data = {"version": self._version, **self._encode(value)}
            try:
                write_json_atomically(self.path, data, mode=self._mode)
            except OSError as exc:
                raise self._error(f"cannot write {self.path}: {exc.strerror}") from exc
            self._stamp = None
        finally:
            os.close(lock_fd)

    def _load(self) -> T:
        try:
            data = read_json(self.path)
        except (OSError, ValueError) as exc:
            raise self._error(f"cannot read {self.path}: {exc}") from exc
        if data is None:
            return self._empty()
        try:
            if data.get("version") != self._version:
                raise ValueError(f"unknown format version {data.get('version')!r}")
            return self._decode(data)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise self._error(f"{self.path} is not readable: {exc}") from exc
