"""The Java transactional loop (Kafka's Java client) as a black-box target of
``onceflow verify --command``: a program in another language, verified exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from onceflow.guarantees import Guarantee
from onceflow.verify.blackbox import INSTANCE_KILL, INSTANCE_PAUSE, Program, verify_program
from onceflow.verify.outcome import Outcome

from .java_programs import CLASSPATH, PACKAGE, require_built

pytestmark = pytest.mark.java

SEED = 7
INPUTS = 200
KILLS = 3
# A stable transactional id per instance: a restarted instance aborts what its killed
# predecessor left open. The loop runs until SIGTERM, which finishes its transaction.
COMMAND = (
    f"java -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp {CLASSPATH} "
    f"{PACKAGE}.TransactionalLoop --bootstrap {{bootstrap}} --input {{input}} "
    "--output {output} --group java-transactional-loop "
    "--transactional-id java-transactional-loop-{instance} --until-sigterm true"
)


def test_java_transactional_loop_passes_exactly_once(tmp_path: Path) -> None:
    require_built()
    # Lost produce responses are left out: whether the loop still makes a produce
    # request after the fault is armed depends on where the seed puts it.
    faults = [INSTANCE_KILL, INSTANCE_PAUSE, "network-cut", "broker-kill"]
    result = verify_program(
        Program(COMMAND, "in", "out", instances=2), Guarantee.EXACTLY_ONCE, seed=SEED,
        inputs=INPUTS, kills=KILLS, faults=faults, workdir=tmp_path,
    )  # fmt: skip
    assert result.outcome is Outcome.PASS, result.to_json()
    assert result.findings.lost == set() and result.findings.duplicated == set()
    assert result.findings.orders == INPUTS
    assert len(result.notes) == 1 + KILLS + 3, result.notes  # the seed, kills, 3 faults
