"""One memory (SPEC section 10): a strategy run another member recorded is learned here as if
this member had run it (its evidence, start levels and timeouts), without being stored again.
Runs are only ever appended, so no member overwrites another's evidence."""

from __future__ import annotations

from coordinator_plugins.error_handling.learning.performance import PerformanceTracker, Sample
from coordinator_plugins.error_handling.learning.policy import SelectionPolicy
from coordinator_plugins.error_handling.learning.timeouts import AdaptiveTimeouts
from coordinator_plugins.error_handling.storage.records import StrategyRun


def learn_remote(
    perf: PerformanceTracker, timeouts: AdaptiveTimeouts, policy: SelectionPolicy, run: StrategyRun
) -> None:
    """Fold ``run`` into this member's learning: its evidence, timeouts and start levels."""
    et, sid = run.error_type, run.strategy_id
    keys = [et, f"{et}@{run.hardware_id}"] if run.hardware_id else [et]
    if run.outcome == "timeout":
        timeouts.observe_timeout(et, sid)
    elif run.success:
        timeouts.observe_success(et, sid, run.execution_time)
    sample = Sample(run.success, run.execution_time, run.impact_score, run.stability_score, run.affected_tasks,
                    run.recovered_tasks)
    perf.add(keys, sid, sample)
    policy.record_level(et, run.level, run.success)
