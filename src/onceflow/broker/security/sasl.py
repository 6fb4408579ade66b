"""SASL mechanisms on the server side (PLAIN and SCRAM), and the slow-down of
repeated authentication failures."""

from __future__ import annotations

import time
from typing import Protocol

from onceflow.broker.security.credentials import CredentialStore
from onceflow.broker.security.scram import AuthenticationFailed, ScramMechanism, ScramServer

PLAIN = "PLAIN"
#: Every mechanism the broker implements, in the order SaslHandshake lists them.
MECHANISMS = (PLAIN, *(m.sasl_name for m in ScramMechanism))
#: PLAIN checks a password against a stored SCRAM credential, the strongest first.
_PLAIN_CHECKED_AGAINST = (ScramMechanism.SCRAM_SHA_512, ScramMechanism.SCRAM_SHA_256)
_MAX_PLAIN_MESSAGE = 1024


class Authenticator(Protocol):
    """One SASL exchange: feed it each client message until it says it is done."""

    #: The authenticated user name, once the exchange succeeded.
    user: str | None

    def step(self, message: bytes) -> tuple[bytes, bool]:
        """(the server's answer, whether the exchange is complete); raises
        AuthenticationFailed when the client's credentials are wrong."""
        ...


class PlainServer:
    """SASL PLAIN (RFC 4616): ``authzid NUL user NUL password`` in one message, checked
    by recomputing the user's stored SCRAM credential with its own salt."""

    def __init__(self, store: CredentialStore) -> None:
        self._store = store
        self.user: str | None = None

    def step(self, message: bytes) -> tuple[bytes, bool]:
        parts = message.split(b"\0") if len(message) <= _MAX_PLAIN_MESSAGE else []
        if len(parts) != 3:
            raise AuthenticationFailed("Authentication failed: malformed PLAIN message")
        try:
            authzid, user, password = (part.decode() for part in parts)
        except UnicodeDecodeError:
            raise AuthenticationFailed("Authentication failed: PLAIN is not UTF-8") from None
        if authzid and authzid != user:
            raise AuthenticationFailed("Authentication failed: authorization id differs")
        for mechanism in _PLAIN_CHECKED_AGAINST:
            credential = self._store.lookup(user, mechanism)
            if credential is not None:
                if credential.matches_password(mechanism, password):
                    self.user = user
                    return b"", True
                break
        raise AuthenticationFailed("Authentication failed: Invalid username or password")


def authenticator(mechanism: str, store: CredentialStore) -> Authenticator:
    """The server side of ``mechanism`` (one of MECHANISMS)."""
    if mechanism == PLAIN:
        return PlainServer(store)
    scram = ScramMechanism.from_name(mechanism)
    return ScramServer(scram, lambda user: store.lookup(user, scram))


class FailureThrottle:
    """How long to hold back the answer to a failed authentication from one address.

    The first failure waits ``base`` seconds (Kafka's
    connection.failed.authentication.delay.ms); each further failure from the same
    address doubles it, up to ``ceiling``. An address is forgiven after ``forget_after``
    seconds without failures, or by a success.
    """

    def __init__(
        self,
        base: float = 0.1,
        ceiling: float = 5.0,
        forget_after: float = 60.0,
        max_addresses: int = 10_000,
    ) -> None:
        self.base = base
        self.ceiling = ceiling
        self.forget_after = forget_after
        self.max_addresses = max_addresses
        self._failures: dict[str, tuple[int, float]] = {}

    def failed(self, address: str) -> float:
        """Record a failure; returns the delay before answering it."""
        now = time.monotonic()
        count, last = self._failures.get(address, (0, now))
        if now - last > self.forget_after:
            count = 0
        count += 1
        if address not in self._failures and len(self._failures) >= self.max_addresses:
            self._forget_old(now)
        self._failures[address] = (count, now)
        return min(self.ceiling, self.base * 2 ** min(count - 1, 30))

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

    def _forget_old(self, now: float) -> None:
        for address, (_, last) in list(self._failures.items()):
            if now - last > self.forget_after:
                del self._failures[address]
        while len(self._failures) >= self.max_addresses:
            del self._failures[next(iter(self._failures))]
