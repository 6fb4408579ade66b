"""Per-connection security state: the listener it arrived on, who the client is, and
whether it may send requests yet.

The server creates one ``Session`` per connection, in that connection's task, and
handlers read it with ``current_session()`` (asyncio copies the context into every
task, so each connection sees only its own).
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from onceflow.broker.protocol import ProtocolError
from onceflow.broker.security.acls import AclStore, Authorizer
from onceflow.broker.security.credentials import CredentialStore
from onceflow.broker.security.listeners import Listener, SecurityProtocol
from onceflow.broker.security.sasl import Authenticator, FailureThrottle
from onceflow.broker.security.tls import certificate_principal

if TYPE_CHECKING:
    from onceflow.broker.config import BrokerConfig

log = logging.getLogger(__name__)

ANONYMOUS = "User:ANONYMOUS"
API_VERSIONS = 18
SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
#: What a client on a SASL listener may send before it has authenticated.
_BEFORE_AUTHENTICATION = frozenset({API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE})


@dataclasses.dataclass(slots=True)
class Session:
    """The security state of one connection."""

    listener: Listener
    #: Kafka's principal: ``User:NAME`` after SASL, the certificate subject over TLS
    #: with a client certificate, ``User:ANONYMOUS`` otherwise.
    principal: str = ANONYMOUS
    authenticated: bool = True
    #: The SASL exchange started by SaslHandshake and driven by SaslAuthenticate.
    authenticator: Authenticator | None = None
    #: Set by a handler whose answer must be the last one on this connection.
    close_after_response: bool = False
    #: When an unauthenticated connection is closed (a monotonic time; set by the server).
    deadline: float | None = None

    def admit(self, api_key: int) -> None:
        """Refuse (close the connection) a request sent before authentication."""
        if not self.authenticated and api_key not in _BEFORE_AUTHENTICATION:
            raise ProtocolError(
                f"request (API key {api_key}) before SASL authentication on {self.listener.name}"
            )


class Security:
    """What the broker shares between connections: credentials, failure throttling and
    the authorizer."""

    def __init__(self, config: BrokerConfig) -> None:
        self.credentials = CredentialStore(config.data_dir)
        self.mechanisms = config.sasl_mechanisms
        self.throttle = FailureThrottle()
        self.authorizer = Authorizer(
            AclStore(config.data_dir),
            enabled=config.acls_enabled,
            super_users=config.super_users,
            allow_if_no_acl=config.allow_everyone_if_no_acl_found,
        )

    def open_session(self, listener: Listener, ssl_object: Any) -> Session:
        """The session of a new connection, made current for its task."""
        principal = certificate_principal(ssl_object) if ssl_object is not None else None
        session = Session(
            listener,
            principal or ANONYMOUS,
            authenticated=listener.protocol not in _SASL_PROTOCOLS,
        )
        _current.set(session)
        if principal is not None:
            log.debug("%s connected on %s with a client certificate", principal, listener)
        return session


_SASL_PROTOCOLS = frozenset(p for p in SecurityProtocol if p.uses_sasl)

_current: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "onceflow_security_session", default=None
)


def current_session() -> Session | None:
    """The session of the connection whose request is being handled (None outside one)."""
    return _current.get()
