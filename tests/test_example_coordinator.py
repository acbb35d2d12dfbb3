"""Issue 28 item 8: the docs' example of a coordinator that is not the reference one
(``examples/tiny_coordinator.py``) runs as its users will run it, and does what docs/integrating.md says:
a worker crash recovered by the built-in ``worker`` strategy through the coordinator's own
methods, a corrupted cache recovered by the coordinator's own strategy registered from the config,
a hook that fired, and every group resolved."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "tiny_coordinator.py"


def _check(summary: dict[str, Any]) -> None:
    assert summary["recoveries"] == [("clear_cache", True), ("worker", True)], summary
    assert len(summary["alerts"]) == 1 and summary["alerts"][0].startswith("worker_crash "), summary
    assert summary["groups"] == [("task_error", "resolved"), ("worker_crash", "resolved")], summary
    assert summary["tasks"] == ["completed"] * 3, summary
    assert summary["held"] == (2, 1.0), summary  # both successes held through verify_window


def test_the_example_runs_as_a_script() -> None:
    out = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    _check(ast.literal_eval(out.stdout.strip().splitlines()[-1]))


async def test_the_example_keeps_what_it_learned_in_its_database(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("tiny_coordinator", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["tiny_coordinator"] = module  # the config names its strategy as "tiny_coordinator:ClearCache"
    try:
        spec.loader.exec_module(module)
        path = tmp_path / "tiny.duckdb"
        _check(await module.run(str(path)))
    finally:
        del sys.modules["tiny_coordinator"]
    # what it learned is in its database: a restart on the file finds it
    again = EnhancedErrorHandlingIntegration(None, {"database": str(path), "auto_recover": False})
    await again.start()
    try:
        performance = await again.get_performance_metrics()
        unresolved = await again.get_unresolved_errors()
    finally:
        await again.stop()
    assert sorted(performance["strategies"]) == ["clear_cache", "worker"]
    assert performance["overall"]["total_executions"] == 2 and unresolved == []
