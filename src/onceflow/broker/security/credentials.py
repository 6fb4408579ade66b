"""The durable store of SCRAM credentials: ``users.json`` in the broker's data dir.

Only salted, iterated credentials are kept (salt, iterations, StoredKey, ServerKey),
never a password. ``onceflow users`` edits the file while a broker may be running: each
change is a locked read-modify-write replaced atomically, and the broker reloads the
file when it changed, so a user added from the command line can log in at once.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from onceflow.broker.security.scram import ScramCredential, ScramMechanism
from onceflow.broker.security.shared_file import SharedFileError, SharedJsonFile

FILE_NAME = "users.json"
_FORMAT_VERSION = 1

Users = dict[str, dict[ScramMechanism, ScramCredential]]


class CredentialStoreError(SharedFileError):
    """The credential file cannot be read or written; the message is for humans."""


class CredentialStore:
    """SCRAM credentials per user and mechanism, backed by one file."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self._file = SharedJsonFile(
            self.path,
            version=_FORMAT_VERSION,
            decode=_decode,
            encode=_encode,
            empty=dict,
            error=CredentialStoreError,
            mode=0o600,
        )

    def lookup(self, user: str, mechanism: ScramMechanism) -> ScramCredential | None:
        """The user's credential for ``mechanism``, from the file as it is now."""
        return self.users().get(user, {}).get(mechanism)

    def users(self) -> Users:
        """Every user's credentials (reloaded if the file changed since last read)."""
        return self._file.read()

    def upsert(self, user: str, mechanism: ScramMechanism, credential: ScramCredential) -> None:
        """Add or replace one credential, durably."""
        if not user:
            raise CredentialStoreError("a user name cannot be empty")
        with self._file.editing() as users:
            users.setdefault(user, {})[mechanism] = credential

    def delete(self, user: str, mechanism: ScramMechanism | None = None) -> bool:
        """Remove one credential (or all of a user's); False when there was none."""
        with self._file.editing() as users:
            held = users.get(user, {})
            if mechanism is None:
                found = bool(held)
                held.clear()
            else:
                found = held.pop(mechanism, None) is not None
            if not held:
                users.pop(user, None)
            return found


def _encode(users: Users) -> dict[str, Any]:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
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
