"""SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677): the maths both sides share,
and the client side of the exchange.

The broker keeps the server side (``onceflow.broker.security.scram``); the operator
commands' wire client (``onceflow.admin.wire``) logs in with ``ScramClient``.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets

#: Kafka accepts SCRAM iterations in this range (and uses 4096 by default).
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 16384
_NONCE_BYTES = 24


class ScramMechanism(enum.Enum):
    """A SCRAM mechanism: its SASL name, its hash, and its code in Kafka's admin APIs."""

    SCRAM_SHA_256 = ("SCRAM-SHA-256", "sha256", 1)
    SCRAM_SHA_512 = ("SCRAM-SHA-512", "sha512", 2)

    def __init__(self, sasl_name: str, hash_name: str, code: int) -> None:
        self.sasl_name = sasl_name
        self.hash_name = hash_name
        self.code = code

    @classmethod
    def from_name(cls, name: str) -> ScramMechanism:
        for mechanism in cls:
            if mechanism.sasl_name == name.upper():
                return mechanism
        raise ValueError(f"unknown SCRAM mechanism {name!r} (SCRAM-SHA-256, SCRAM-SHA-512)")

    @classmethod
    def from_code(cls, code: int) -> ScramMechanism | None:
        return next((m for m in cls if m.code == code), None)

    def hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, self.hash_name).digest()

    def hash(self, data: bytes) -> bytes:
        return hashlib.new(self.hash_name, data).digest()

    def salted_password(self, password: str, salt: bytes, iterations: int) -> bytes:
        """Hi(Normalize(password), salt, i): PBKDF2 with this mechanism's HMAC."""
        return hashlib.pbkdf2_hmac(self.hash_name, password.encode(), salt, iterations)


class ScramError(Exception):
    """The server's side of the exchange is malformed, refused us, or cannot be
    trusted; the message is one line and never holds the password."""


def encode_saslname(name: str) -> str:
    """RFC 5802 user names escape '=' as '=3D' and ',' as '=2C'."""
    return name.replace("=", "=3D").replace(",", "=2C")


def _attributes(message: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise ScramError("malformed SCRAM message from the server")
        pairs.setdefault(key, value)
    return pairs


class ScramClient:
    """One SCRAM exchange on the client side: ``first()``, then ``final(server_first)``,
    then ``check(server_final)``, which proves the server knew the credential."""

    def __init__(
        self,
        mechanism: ScramMechanism,
        username: str,
        password: str,
        nonce: str | None = None,
    ) -> None:
        self.mechanism = mechanism
        self._password = password
        self._nonce = nonce or secrets.token_urlsafe(_NONCE_BYTES)
        self._first_bare = f"n={encode_saslname(username)},r={self._nonce}"
        self._server_signature = b""

    def first(self) -> bytes:
        """client-first-message (no channel binding, no authorization id)."""
        return f"n,,{self._first_bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        """client-final-message, with the proof, for the server's first answer."""
        text = server_first.decode(errors="replace")
        attributes = _attributes(text)
        if "e" in attributes:
            raise ScramError(f"the server refused: {attributes['e']}")
        nonce, salt_text, iterations_text = (attributes.get(k, "") for k in "rsi")
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise ScramError("the server's SCRAM nonce does not extend ours")
        try:
            salt = base64.b64decode(salt_text, validate=True)
            iterations = int(iterations_text)
        except ValueError:
            raise ScramError("malformed salt or iteration count from the server") from None
        if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
            raise ScramError(f"the server asks for {iterations} SCRAM iterations")
        m = self.mechanism
        salted = m.salted_password(self._password, salt, iterations)
        client_key = m.hmac(salted, b"Client Key")
        without_proof = f"c={base64.b64encode(b'n,,').decode()},r={nonce}"
        auth_message = f"{self._first_bare},{text},{without_proof}".encode()
        signature = m.hmac(m.hash(client_key), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_signature = m.hmac(m.hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def check(self, server_final: bytes) -> None:
        """Raise ScramError unless ``server_final`` carries the signature only a server
        holding this user's credential can make."""
        attributes = _attributes(server_final.decode(errors="replace"))
        if "e" in attributes:
            raise ScramError(f"the server refused: {attributes['e']}")
        try:
            signature = base64.b64decode(attributes.get("v", ""), validate=True)
        except ValueError:
            signature = b""
        if not self._server_signature or not hmac.compare_digest(signature, self._server_signature):
            raise ScramError("the server's SCRAM signature is wrong: it does not know the user")
