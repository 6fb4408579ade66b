"""onceflow: Kafka delivery guarantees made a one-word choice, and proven."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from onceflow.guarantees import Guarantee

if TYPE_CHECKING:
    from onceflow.broker.config import BrokerConfig, FlushPolicy
    from onceflow.broker.server import Broker, BrokerThread, run_in_thread

__all__ = ["Broker", "BrokerConfig", "BrokerThread", "FlushPolicy", "Guarantee", "run_in_thread"]
__version__ = "0.1.0"

# The broker's names load on first use, so that importing the processing runtime (which
# talks to any Kafka cluster) does not import the embedded broker.
_LAZY = {
    "BrokerConfig": "onceflow.broker.config",
    "FlushPolicy": "onceflow.broker.config",
    "Broker": "onceflow.broker.server",
    "BrokerThread": "onceflow.broker.server",
    "run_in_thread": "onceflow.broker.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'onceflow' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
