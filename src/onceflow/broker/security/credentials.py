"""The durable store of SCRAM credentials: ``users.json`` in the broker's data dir.

Only salted, iterated credentials are kept (salt, iterations, StoredKey, ServerKey),
never a password. ``onceflow users`` edits the file while a broker may be running: each
change is a locked read-modify-write replaced atomically, and the broker reloads the
file when it changed, so a user added from the command line can log in at once.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from onceflow.broker.log.atomic import read_json, write_json_atomically
from onceflow.broker.security.scram import ScramCredential, ScramMechanism

FILE_NAME = "users.json"
_FORMAT_VERSION = 1

Users = dict[str, dict[ScramMechanism, ScramCredential]]


class CredentialStoreError(Exception):
    """The credential file cannot be read or written; the message is for humans."""


class CredentialStore:
    """SCRAM credentials per user and mechanism, backed by one file."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self._lock_path = self.path.with_name(FILE_NAME + ".lock")
        self._users: Users = {}
        self._stamp: tuple[int, int, int] | None = None

    def lookup(self, user: str, mechanism: ScramMechanism) -> ScramCredential | None:
        """The user's credential for ``mechanism``, from the file as it is now."""
        return self.users().get(user, {}).get(mechanism)

    def users(self) -> Users:
        """Every user's credentials (reloaded if the file changed since last read)."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            self._users, self._stamp = {}, None
            return self._users
        except OSError as exc:
            raise CredentialStoreError(f"cannot read {self.path}: {exc.strerror}") from exc
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            self._users = self._read()
            self._stamp = stamp
        return self._users

    def upsert(self, user: str, mechanism: ScramMechanism, credential: ScramCredential) -> None:
        """Add or replace one credential, durably."""
        if not user:
            raise CredentialStoreError("a user name cannot be empty")
        with self._editing() as users:
            users.setdefault(user, {})[mechanism] = credential

    def delete(self, user: str, mechanism: ScramMechanism | None = None) -> bool:
        """Remove one credential (or all of a user's); False when there was none."""
        with self._editing() as users:
            held = users.get(user, {})
            if mechanism is None:
                found = bool(held)
                held.clear()
            else:
                found = held.pop(mechanism, None) is not None
            if not held:
                users.pop(user, None)
            return found

    @contextlib.contextmanager
    def _editing(self) -> Iterator[Users]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise CredentialStoreError(f"cannot write {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            users = self._read()
            yield users
            try:
                write_json_atomically(self.path, _encode(users), mode=0o600)
            except OSError as exc:
                raise CredentialStoreError(f"cannot write {self.path}: {exc.strerror}") from exc
            self._stamp = None
        finally:
            os.close(lock_fd)

    def _read(self) -> Users:
        try:
            data = read_json(self.path)
        except (OSError, ValueError) as exc:
            raise CredentialStoreError(f"cannot read {self.path}: {exc}") from exc
        if data is None:
            return {}
        try:
            return _decode(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise CredentialStoreError(f"{self.path} is not a credential file: {exc}") from exc


def _encode(users: Users) -> dict[str, Any]:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "version": _FORMAT_VERSION,
        "users": {
            user: {
                mechanism.sasl_name: {
                    "salt": b64(cred.salt),
                    "iterations": cred.iterations,
                    "stored_key": b64(cred.stored_key),
                    "server_key": b64(cred.server_key),
                }
                for mechanism, cred in sorted(held.items(), key=lambda item: item[0].code)
            }
            for user, held in sorted(users.items())
        },
    }


def _decode(data: dict[str, Any]) -> Users:
    if data.get("version") != _FORMAT_VERSION:
        raise ValueError(f"unknown format version {data.get('version')!r}")
    return {
        user: {
            ScramMechanism.from_name(name): ScramCredential(
                base64.b64decode(cred["salt"]),
                int(cred["iterations"]),
                base64.b64decode(cred["stored_key"]),
                base64.b64decode(cred["server_key"]),
            )
            for name, cred in held.items()
        }
        for user, held in data["users"].items()
    }
