"""The runtime's import shape: no broker behind ``import onceflow.processing``, and no
import circle between the runner and its commit policies."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from types import ModuleType


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(done.stdout.split())


def test_processing_does_not_load_the_broker() -> None:
    loaded = _loaded_after("import onceflow.processing")
    assert "onceflow.processing.runner" in loaded
    assert not {m for m in loaded if m.startswith("onceflow.broker")}


def _imports(module: ModuleType) -> set[str]:
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text())
    found = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name}


def test_policies_do_not_import_the_runner() -> None:
    from onceflow.processing import policies, runner

    assert "onceflow.processing.policies" in _imports(runner)
    assert not {m for m in _imports(policies) if m.startswith("onceflow.processing.runner")}


def test_crash_points_are_not_in_the_public_surface() -> None:
    import onceflow.processing
    from onceflow.processing import crashpoints

    assert set(crashpoints.ALL) == {
        "record_processed", "before_offsets", "before_commit", "after_commit"
    }  # fmt: skip
    assert not {"RECORD_PROCESSED", "BEFORE_COMMIT"} & set(onceflow.processing.__all__)
