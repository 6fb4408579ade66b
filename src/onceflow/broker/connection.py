"""Who is on the other end of the connection a request arrived on.

Handlers are called as ``handler(broker, header, request)``; the few that need the
client's address (DescribeGroups reports it per member) read ``current_client()``.
The server sets it once per connection, in that connection's own task: asyncio gives
every task a copy of the context, so each connection sees only its own peer, including
in the coroutines its handlers start.
"""

from __future__ import annotations

import contextvars
import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class ClientConnection:
    """The peer address of one client connection."""

    host: str
    port: int

    @classmethod
    def from_peername(cls, peername: Any) -> ClientConnection:
        """From ``transport.get_extra_info("peername")`` (an IPv4 or IPv6 tuple, or None
        for a socket that is already gone)."""
        if isinstance(peername, tuple) and len(peername) >= 2:
            return cls(str(peername[0]), int(peername[1]))
        return UNKNOWN_CLIENT


UNKNOWN_CLIENT = ClientConnection("unknown", -1)

_current: contextvars.ContextVar[ClientConnection] = contextvars.ContextVar(
    "onceflow_client_connection", default=UNKNOWN_CLIENT
)


def enter_connection(peername: Any) -> None:
    """Record the peer of the connection served by the current task."""
    _current.set(ClientConnection.from_peername(peername))


def current_client() -> ClientConnection:
    """The peer of the connection whose request is being handled."""
    return _current.get()
