"""The verifier: run a workload under injected faults, record a history, check it.

``verify(guarantee, faults)`` runs one check; ``showcase(console)`` runs the matrix of
``make demo``.
"""

from onceflow.verify.checker import Anomaly, Findings, Verdict, check, verdict
from onceflow.verify.faults import FAULTS
from onceflow.verify.outcome import Outcome
from onceflow.verify.run import Result, RunError, verify
from onceflow.verify.showcase import showcase

__all__ = [
    "FAULTS",
    "Anomaly",
    "Findings",
    "Outcome",
    "Result",
    "RunError",
    "Verdict",
    "check",
    "showcase",
    "verdict",
    "verify",
]
