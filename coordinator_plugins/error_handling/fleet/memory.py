"""One memory (SPEC section 10): a strategy run another member recorded is learned here as if
this member had run it (its evidence, start levels and timeouts), without being stored again.
Runs are only ever appended, so no member overwrites another's evidence."""

from __future__ import annotations

from typing import Any

from coordinator_plugins.error_handling.learning.performance import Sample
from coordinator_plugins.error_handling.storage.records import StrategyRun


def learn_remote(manager: Any, run: StrategyRun) -> None:
    """Fold ``run`` into ``manager``'s learning (its perf tracker, timeouts and policy)."""
    et, sid = run.error_type, run.strategy_id
    keys = [et, f"{et}@{run.hardware_id}"] if run.hardware_id else [et]
    if run.outcome == "timeout":
        manager.timeouts.observe_timeout(et, sid)
    elif run.success:
        manager.timeouts.observe_success(et, sid, run.execution_time)
    sample = Sample(run.success, run.execution_time, run.impact_score, run.stability_score, run.affected_tasks,
                    run.recovered_tasks)
    manager.perf.add(keys, sid, sample)
    manager.policy.record_level(et, run.level, run.success)
