"""The named faults a verify run can inject (see ``registry``).

Process faults kill real OS processes with SIGKILL; network faults go through the
``KafkaProxy`` in front of the broker, so they work against any Kafka; broker faults
need a broker the verifier runs; cluster faults kill or pause single nodes of an Apache
Kafka cluster the verifier runs (leaders, coordinators, followers). Each module
registers its faults on import; the registry's order (this import order) is the order
a run applies them in.
"""

from onceflow.verify.faults import broker, cluster, network, process  # noqa: F401 - register
from onceflow.verify.faults.process import zombie_pause_point
from onceflow.verify.faults.registry import (
    EMBEDDED,
    FAULTS,
    NO_FAULT,
    Capability,
    Fault,
    FaultContext,
    Target,
    applicable,
    bootstrap_target,
    cluster_target,
    parse,
    register,
)

__all__ = [
    "EMBEDDED",
    "FAULTS",
    "NO_FAULT",
    "Capability",
    "Fault",
    "FaultContext",
    "Target",
    "applicable",
    "bootstrap_target",
    "cluster_target",
    "parse",
    "register",
    "zombie_pause_point",
]
