"""The fault registry: what a fault is, what a target offers, which faults apply.

A fault declares the capabilities it needs (``requires``); a target declares the ones
it offers. The faults that apply to a target, and so the ones ``onceflow verify`` runs
by default, are those whose needs the target meets. Adding a fault is one ``Fault``
passed to ``register`` in a module of this package.

A fault acts at one of four stages of a run:

- ``produce``: while the orders are produced (a producer crash, a lost acknowledgement);
- ``crash``: a pipeline worker is started to die at a runtime crash point, then the
  next one takes over from what was committed;
- ``live``: while the last worker is mid-stream (broker kill -9, network cut, lost
  acknowledgement of the worker's own writes);
- ``zombie``: the last worker stops itself (SIGSTOP) at a commit point and stays silent
  while a restart of the same instance (same group.instance.id and transactional id)
  takes its membership and partitions and processes, then is resumed (SIGCONT) and
  tries to finish what it started.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from onceflow.guarantees import Guarantee

if TYPE_CHECKING:
    from onceflow.testing import BrokerProcess, KafkaCluster
    from onceflow.verify.proxy import KafkaProxy
    from onceflow.verify.workload import Workload

#: ``--fault none``: a run that injects nothing, a smoke test of the set-up only.
NO_FAULT = "none"


class Capability(StrEnum):
    """What a target lets the verifier do to it."""

    #: Kill the workload's own processes and cut or tamper with their connections
    #: (through the verifier's proxy): every target.
    CLIENTS = "clients"
    #: Kill -9 and restart the one broker process: the embedded broker the verifier runs.
    BROKER_PROCESS = "broker-process"
    #: Kill individual brokers of a multi-node cluster (leaders, coordinators).
    CLUSTER = "cluster"


@dataclass(frozen=True)
class Target:
    """Where a run goes, and what the verifier can do to it."""

    name: str
    capabilities: frozenset[Capability]


EMBEDDED = Target("embedded", frozenset({Capability.CLIENTS, Capability.BROKER_PROCESS}))


def bootstrap_target(bootstrap: str) -> Target:
    """Any Kafka-compatible cluster given by address: only its clients can be faulted."""
    return Target(bootstrap, frozenset({Capability.CLIENTS}))


def cluster_target(size: int) -> Target:
    """An Apache Kafka cluster whose nodes the verifier runs (onceflow.testing.kafka)."""
    return Target(f"kafka-{size}-nodes", frozenset({Capability.CLIENTS, Capability.CLUSTER}))


@dataclass
class FaultContext:
    """What a fault can act on."""

    proxy: KafkaProxy
    broker: BrokerProcess | None
    #: The Apache Kafka cluster of a ``cluster`` target, None elsewhere.
    cluster: KafkaCluster | None = None
    #: The run's topics, group and transactional id (set once the run has them).
    workload: Workload | None = None
    #: Why a fault that struck did not do what it is for, by fault name (see ``missed``).
    misses: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Fault:
    """One named fault.

    ``inject`` strikes (stages produce and live) and says what it did; ``missed``,
    asked once the run is over, says why the fault did not land (None: it did), so a
    run whose fault never struck is inconclusive rather than a pass.
    """

    name: str
    description: str
    stage: str  # produce, crash, live or zombie
    requires: frozenset[Capability] = frozenset({Capability.CLIENTS})
    crash_at: dict[Guarantee, str] = field(default_factory=dict)
    inject: Callable[[FaultContext], str] | None = None
    missed: Callable[[FaultContext], str | None] | None = None
    #: The guarantees whose runs it can strike, and why not the others.
    guarantees: frozenset[Guarantee] = frozenset(Guarantee)
    unfit: str = ""


STAGES = ("produce", "crash", "live", "zombie")
FAULTS: dict[str, Fault] = {}


def register(fault: Fault) -> Fault:
    """Add ``fault`` to the registry (its name must be new)."""
    if fault.name in FAULTS or fault.name == NO_FAULT:
        raise ValueError(f"fault {fault.name!r} is registered twice")
    if fault.stage not in STAGES:
        raise ValueError(f"fault {fault.name!r} has no stage {fault.stage!r}")
    FAULTS[fault.name] = fault
    # Kept in the order a run applies them, whatever order the modules register in.
    ordered = sorted(FAULTS.values(), key=lambda f: STAGES.index(f.stage))
    FAULTS.clear()
    FAULTS.update((f.name, f) for f in ordered)
    return fault


def applicable(target: Target, guarantee: Guarantee | None = None) -> list[Fault]:
    """Every fault ``target`` can take (in a run of ``guarantee``, when given), in the
    order a run applies them."""
    return [
        f
        for f in FAULTS.values()
        if f.requires <= target.capabilities and (guarantee is None or guarantee in f.guarantees)
    ]


def parse(names: list[str], target: Target, guarantee: Guarantee | None = None) -> list[Fault]:
    """The faults named ``names`` (in the order the run applies them); ``none`` alone
    means no fault. A fault ``target`` cannot take, or that cannot strike a run of
    ``guarantee``, is refused with the reason."""
    if names == [NO_FAULT]:
        return []
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        choices = ", ".join([NO_FAULT, *FAULTS])
        raise ValueError(f"unknown fault {unknown[0]!r}; choose from {choices}")
    chosen = [FAULTS[n] for n in FAULTS if n in names]
    for fault in chosen:
        missing = sorted(fault.requires - target.capabilities)
        if missing:
            raise ValueError(
                f"{fault.name} needs a target with {', '.join(missing)}; {target.name} "
                "offers only " + ", ".join(sorted(target.capabilities))
            )
        if guarantee is not None and guarantee not in fault.guarantees:
            raise ValueError(f"{fault.name} cannot strike a {guarantee.value} run: {fault.unfit}")
    return chosen
