"""SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677): credentials and the server side.

A stored credential is (salt, iterations, StoredKey, ServerKey): enough to check a
client's proof and to prove the server knows the password, never the password itself.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import secrets
from collections.abc import Callable

# The shared maths lives outside the broker, for the wire client; re-exported here.
from onceflow.scram import MAX_ITERATIONS as MAX_ITERATIONS
from onceflow.scram import MIN_ITERATIONS as MIN_ITERATIONS
from onceflow.scram import ScramMechanism as ScramMechanism

DEFAULT_ITERATIONS = 4096
_NONCE_BYTES = 24


@dataclasses.dataclass(frozen=True, slots=True)
class ScramCredential:
    """What the server keeps for one user and mechanism."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def from_salted_password(
        cls, mechanism: ScramMechanism, salt: bytes, iterations: int, salted: bytes
    ) -> ScramCredential:
        client_key = mechanism.hmac(salted, b"Client Key")
        return cls(
            salt,
            iterations,
            mechanism.hash(client_key),
            mechanism.hmac(salted, b"Server Key"),
        )

    @classmethod
    def from_password(
        cls, mechanism: ScramMechanism, password: str, iterations: int = DEFAULT_ITERATIONS
    ) -> ScramCredential:
        salt = secrets.token_bytes(32)
        salted = mechanism.salted_password(password, salt, iterations)
        return cls.from_salted_password(mechanism, salt, iterations, salted)

    def matches_password(self, mechanism: ScramMechanism, password: str) -> bool:
        """Whether ``password`` derives this credential (how PLAIN is checked)."""
        salted = mechanism.salted_password(password, self.salt, self.iterations)
        client_key = mechanism.hmac(salted, b"Client Key")
        return hmac.compare_digest(mechanism.hash(client_key), self.stored_key)


class AuthenticationFailed(Exception):
    """The client did not prove who it claims to be; the message may go to the client."""


def decode_saslname(value: str) -> str:
    """RFC 5802 user names escape ',' as '=2C' and '=' as '=3D'."""
    if "=" in value.replace("=2C", "").replace("=3D", ""):
        raise AuthenticationFailed("Authentication failed: malformed user name")
    return value.replace("=2C", ",").replace("=3D", "=")


def _attributes(message: str) -> list[tuple[str, str]]:
    pairs = []
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise AuthenticationFailed("Authentication failed: malformed SCRAM message")
        pairs.append((key, value))
    return pairs


class ScramServer:
    """One SCRAM exchange on the server side: client-first, then client-final.

    ``lookup`` returns the user's stored credential for this mechanism, or None; an
    unknown user gets a made-up salt and fails only at the proof, like a wrong password,
    so the exchange does not tell which user names exist.
    """

    def __init__(
        self,
        mechanism: ScramMechanism,
        lookup: Callable[[str], ScramCredential | None],
        server_nonce: Callable[[], str] = lambda: secrets.token_urlsafe(_NONCE_BYTES),
    ) -> None:
        self.mechanism = mechanism
        self._lookup = lookup
        self._server_nonce = server_nonce
        self._expect_final = False
        self._user = ""
        self._credential: ScramCredential | None = None
        self._nonce = ""
        self._gs2_header = ""
        self._auth_prefix = ""
        #: The authenticated user name, set once the exchange succeeded.
        self.user: str | None = None

    def step(self, message: bytes) -> tuple[bytes, bool]:
        """(the server's answer, whether the exchange is complete)."""
        try:
            text = message.decode()
        except UnicodeDecodeError:
            raise AuthenticationFailed("Authentication failed: SCRAM is not UTF-8") from None
        if self._expect_final:
            return self._client_final(text), True
        return self._client_first(text), False

    def _client_first(self, text: str) -> bytes:
        flag, sep, rest = text.partition(",")
        authzid, sep2, bare = rest.partition(",")
        if not (sep and sep2) or flag not in ("n", "y"):
            raise AuthenticationFailed("Authentication failed: channel binding is not supported")
        attributes = _attributes(bare)
        if len(attributes) < 2 or attributes[0][0] != "n" or attributes[1][0] != "r":
            raise AuthenticationFailed("Authentication failed: malformed SCRAM client-first")
        if any(key == "m" for key, _ in attributes):
            raise AuthenticationFailed("Authentication failed: mandatory extensions unsupported")
        if any(value.startswith("tokenauth") for _, value in attributes[2:]):
            raise AuthenticationFailed("Authentication failed: delegation tokens unsupported")
        self._user = decode_saslname(attributes[0][1])
        if authzid and decode_saslname(authzid.removeprefix("a=")) != self._user:
            raise AuthenticationFailed("Authentication failed: authorization id differs")
        client_nonce = attributes[1][1]
        if not client_nonce:
            raise AuthenticationFailed("Authentication failed: empty client nonce")
        self._credential = self._lookup(self._user)
        credential = self._credential or ScramCredential(
            secrets.token_bytes(32), DEFAULT_ITERATIONS, b"", b""
        )
        self._nonce = client_nonce + self._server_nonce()
        self._gs2_header = f"{flag},{authzid},"
        server_first = (
            f"r={self._nonce},s={base64.b64encode(credential.salt).decode()},"
            f"i={credential.iterations}"
        )
        self._auth_prefix = f"{bare},{server_first}"
        self._expect_final = True
        return server_first.encode()

    def _client_final(self, text: str) -> bytes:
        without_proof, sep, proof_attr = text.rpartition(",p=")
        if not sep:
            raise AuthenticationFailed("Authentication failed: SCRAM client-final has no proof")
        attributes = dict(_attributes(without_proof))
        # librdkafka before 2.x fixed it sends the client nonce twice (client nonce +
        # the whole nonce); Kafka accepts any nonce ending with the server's, and so do we.
        # The nonce is part of the signed AuthMessage either way.
        if not attributes.get("r", "").endswith(self._nonce):
            raise AuthenticationFailed("Authentication failed: nonce mismatch")
        if attributes.get("c") != base64.b64encode(self._gs2_header.encode()).decode():
            raise AuthenticationFailed("Authentication failed: channel binding mismatch")
        try:
            proof = base64.b64decode(proof_attr, validate=True)
        except ValueError:
            raise AuthenticationFailed("Authentication failed: malformed proof") from None
        credential = self._credential
        auth_message = f"{self._auth_prefix},{without_proof}".encode()
        if credential is None or len(proof) != len(credential.stored_key):
            raise AuthenticationFailed("Authentication failed: invalid credentials")
        signature = self.mechanism.hmac(credential.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(self.mechanism.hash(client_key), credential.stored_key):
            raise AuthenticationFailed("Authentication failed: invalid credentials")
        self.user = self._user
        server_signature = self.mechanism.hmac(credential.server_key, auth_message)
        return b"v=" + base64.b64encode(server_signature)
