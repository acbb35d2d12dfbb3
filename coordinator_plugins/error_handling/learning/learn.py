"""Record one strategy run and learn from it: timeouts, performance samples (impact from the
resource sampler, stability from the coordinator's health), the performance record, and the
attempt with its decision."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

from coordinator_plugins.error_handling.learning.performance import (
    PerformanceTracker,
    Sample,
    impact_score,
    stability_score,
)
from coordinator_plugins.error_handling.learning.timeouts import AdaptiveTimeouts
from coordinator_plugins.error_handling.model import ErrorReport, utcnow
from coordinator_plugins.error_handling.observe.sampler import ResourceSampler
from coordinator_plugins.error_handling.strategies.base import RecoveryStrategy, StrategyResult


class Learner:
    def __init__(
        self, coordinator: Any, perf: PerformanceTracker, timeouts: AdaptiveTimeouts, sampler: ResourceSampler
    ) -> None:
        self.coordinator = coordinator
        self.perf = perf
        self.timeouts = timeouts
        self.sampler = sampler
        self.counts: dict[str, int] = {}  # attempts by outcome
        self.decisions: deque[dict[str, Any]] = deque(maxlen=500)  # recent choices, for explanations

    async def learn(
        self,
        report: ErrorReport,
        level: int,
        record_keys: list[str],
        strategy: RecoveryStrategy,
        result: StrategyResult,
        before: dict[str, Any],
        decision: Any,
        info: dict[str, Any],
    ) -> None:
        et = report.error_type.value
        if result.outcome == "timeout":
            self.timeouts.observe_timeout(et, strategy.strategy_id)
        elif result.success:
            self.timeouts.observe_success(et, strategy.strategy_id, result.execution_time)
        after = self.sampler.latest()
        health = None
        if self.coordinator is not None and callable(getattr(self.coordinator, "health", None)):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    health = await self.coordinator.health()
        affected, recovered = len(result.affected_tasks), len(result.recovered_tasks)
        impact = impact_score(before, after, result.execution_time, affected, recovered)
        stability = stability_score(health, after)
        self.perf.add(
            record_keys,
            strategy.strategy_id,
            Sample(result.success, result.execution_time, impact, stability, affected, recovered),
        )
        self.perf.record(
            {
                "strategy_id": strategy.strategy_id,
                "strategy_name": strategy.name,
                "error_type": et,
                "execution_time": result.execution_time,
                "success": result.success,
                "hardware_id": report.context.hardware_id,
                "affected_tasks": affected,
                "recovered_tasks": recovered,
                "resource_usage": {"before": before, "after": after},
                "impact_score": impact,
                "stability_score": stability,
                "error_id": report.error_id,
                "level": level,
                "outcome": result.outcome,
                "context": {
                    "category": report.category.value,
                    "component": report.context.component,
                    "decision": decision.to_dict(),
                    "details": result.details,
                    "error": result.error,
                },
            }
        )
        self.attempt(
            info,
            decision,
            result.outcome,
            result.execution_time,
            {
                "affected_tasks": result.affected_tasks,
                "recovered_tasks": result.recovered_tasks,
                "impact_score": round(impact, 4),
                "stability_score": round(stability, 4),
                "error": result.error,
                "details": result.details,
            },
        )

    def attempt(self, info: dict[str, Any], decision: Any, outcome: str, elapsed: float, extra: dict[str, Any]) -> None:
        attempt = {
            "strategy_id": decision.strategy_id,
            "level": decision.level,
            "success": outcome == "success",
            "execution_time": round(elapsed, 6),
            "outcome": outcome,
            "decision": decision.to_dict(),
            **extra,
        }
        info["attempts"].append(attempt)
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        self.decisions.append(
            {"error_id": info["error_id"], "at": utcnow().isoformat(), **decision.to_dict(), "outcome": outcome}
        )
