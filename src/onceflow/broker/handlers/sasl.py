"""SaslHandshake and SaslAuthenticate: SASL authentication on SASL listeners.

A failed authentication is answered with SASL_AUTHENTICATION_FAILED, after a delay that
grows with repeated failures from the same address, and the connection is closed.
Re-authentication (KIP-368) is not offered: the session lifetime answered is 0.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.connection import current_client
from onceflow.broker.protocol import build, response_module
from onceflow.broker.security.credentials import CredentialStoreError
from onceflow.broker.security.sasl import authenticator
from onceflow.broker.security.scram import AuthenticationFailed
from onceflow.broker.security.session import current_session

log = logging.getLogger(__name__)

HANDSHAKE_KEY = 17
AUTHENTICATE_KEY = 36
#: SaslAuthenticate's session_lifetime_ms: 0 tells clients not to re-authenticate.
NO_REAUTHENTICATION = datetime.timedelta(0)


def handshake(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(HANDSHAKE_KEY, request.__version__)
    mechanisms = broker.security.mechanisms
    session = current_session()
    if session is None or session.authenticated or session.authenticator is not None:
        # Not a SASL listener, or a second handshake (re-authentication is not offered).
        return build(
            m.SaslHandshakeResponse, error_code=ErrorCode.illegal_sasl_state, mechanisms=mechanisms
        )
    if request.__version__ == 0:
        # v0 is followed by raw SASL tokens outside Kafka frames, which are not spoken.
        session.close_after_response = True
        return build(
            m.SaslHandshakeResponse, error_code=ErrorCode.unsupported_version, mechanisms=()
        )
    if request.mechanism not in mechanisms:
        session.close_after_response = True
        return build(
            m.SaslHandshakeResponse,
            error_code=ErrorCode.unsupported_sasl_mechanism,
            mechanisms=mechanisms,
        )
    session.authenticator = authenticator(request.mechanism, broker.security.credentials)
    return build(m.SaslHandshakeResponse, error_code=ErrorCode.none, mechanisms=mechanisms)


def authenticate(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(AUTHENTICATE_KEY, request.__version__)
    session = current_session()

    def answer(error: ErrorCode, message: str | None, auth_bytes: bytes = b"") -> Any:
        return build(
            m.SaslAuthenticateResponse,
            error_code=error,
            error_message=message,
            auth_bytes=auth_bytes,
            session_lifetime=NO_REAUTHENTICATION,
        )

    if session is None or session.authenticator is None:
        if session is not None:
            session.close_after_response = True
        return answer(ErrorCode.illegal_sasl_state, "SaslAuthenticate without SaslHandshake")
    address = current_client().host
    try:
        reply, done = session.authenticator.step(request.auth_bytes)
    except CredentialStoreError as exc:
        session.close_after_response = True
        session.authenticator = None
        log.error("cannot check credentials: %s", exc)
        return answer(ErrorCode.sasl_authentication_failed, "Authentication failed: server error")
    except AuthenticationFailed as exc:
        session.close_after_response = True
        session.authenticator = None
        delay = broker.security.throttle.failed(address)
        # The reason says which check failed, never what the client sent.
        log.info("authentication failed from %s on %s: %s", address, session.listener.name, exc)
        return _after(delay, answer(ErrorCode.sasl_authentication_failed, str(exc)))
    if done:
        session.principal = f"User:{session.authenticator.user}"
        session.authenticated = True
        session.authenticator = None
        broker.security.throttle.succeeded(address)
        log.debug("%s authenticated from %s on %s", session.principal, address, session.listener)
    return answer(ErrorCode.none, None, reply)


async def _after(delay: float, response: Any) -> Any:
    # Holding the answer back is the slow-down of password guessing.
    await asyncio.sleep(delay)
    return response
