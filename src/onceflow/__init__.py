"""onceflow: Kafka delivery guarantees made a one-word choice, and proven."""

from onceflow.broker.config import BrokerConfig, FlushPolicy
from onceflow.broker.server import Broker, BrokerThread, run_in_thread
from onceflow.guarantees import Guarantee

__all__ = ["Broker", "BrokerConfig", "BrokerThread", "FlushPolicy", "Guarantee", "run_in_thread"]
__version__ = "0.1.0"
