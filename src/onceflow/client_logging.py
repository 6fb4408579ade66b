"""librdkafka's log lines through Python logging instead of raw stderr.

Left alone, librdkafka writes lines such as ``%6|...|BGQUEUE|...`` straight to stderr
from its own threads, through any table or progress bar on the terminal. Given a
``logger`` in its configuration, confluent-kafka queues them instead and hands them
to that logger's ``log`` method, mapping syslog levels to Python's (0-2 CRITICAL,
3 ERROR, 4 WARNING, 5-6 INFO, 7 DEBUG). The queue is served by the client's
``poll()``, ``flush()`` or ``consume()`` on the calling thread, so a client that is
never polled (an AdminClient waiting on futures) shows its lines only once polled;
lines still queued when a client is destroyed are dropped, never printed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

#: Where every onceflow-built client logs; filter or raise its level like any logger.
LIBRDKAFKA_LOGGER = logging.getLogger("onceflow.librdkafka")


def client_config(
    conf: Mapping[str, Any], settings: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``conf`` for a confluent-kafka Producer, Consumer or AdminClient with librdkafka's
    log lines sent to ``onceflow.librdkafka`` (a ``logger`` already in ``conf`` wins),
    on top of the user's client ``settings`` (security; see ``onceflow.client_settings``),
    which ``conf``'s own keys override."""
    return {"logger": LIBRDKAFKA_LOGGER, **(settings or {}), **conf}


def show_client_logs(visible: bool) -> None:
    """Show librdkafka's lines (at their mapped levels) or none at all.

    The command line shows them only at ``--log-level DEBUG``: they are the client's
    diagnostics, and the failures they describe (a broker killed on purpose by a fault,
    say) reach onceflow anyway as errors it handles or reports itself.
    """
    LIBRDKAFKA_LOGGER.setLevel(logging.NOTSET if visible else logging.CRITICAL + 1)
