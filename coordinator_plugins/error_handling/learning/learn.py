"""Record one strategy run and learn from it: timeouts, performance samples (impact from the
resource sampler, stability from the coordinator's health), the performance record, and the
attempt with its decision.

A success is provisional for ``verify_window`` seconds (SPEC section 9): its sample, its
performance record and its timeout observation are held in a :class:`HeldRun` and learned only
once the recovery manager settles it, as a success when it held, as a failure when the error
recurred within the window. Evidence is only ever appended. ``verify_window = 0`` learns a
success at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from coordinator_plugins.error_handling.learning.performance import (
    PerformanceTracker,
    Sample,
    impact_score,
    stability_score,
)
from coordinator_plugins.error_handling.learning.timeouts import AdaptiveTimeouts
from coordinator_plugins.error_handling.model import ErrorReport, utcnow
from coordinator_plugins.error_handling.strategies.base import RecoveryStrategy, StrategyResult


class Readings(Protocol):
    """The machine's latest resource readings (``observe.sampler.ResourceSampler`` takes them):
    ``cpu_percent``, ``memory_percent`` and the like, read before and after each run."""

    def latest(self) -> dict[str, Any]: ...


@dataclass(slots=True)
class HeldRun:
    """A successful run waiting for its verify window: nothing has been learned from it yet."""

    error_type: str
    record_keys: list[str]
    strategy_id: str
    sample: Sample
    row: dict[str, Any]
    decision: dict[str, Any] = field(default_factory=dict)  # its entry in Learner.decisions


class Learner:
    def __init__(
        self,
        coordinator: Any,
        perf: PerformanceTracker,
        timeouts: AdaptiveTimeouts,
        sampler: Readings,
        verify_window: float = 0.0,
    ) -> None:
        self.coordinator = coordinator
        self.perf = perf
        self.timeouts = timeouts
        self.sampler = sampler
        self.verify_window = verify_window
        self.counts: dict[str, int] = {}  # attempts by outcome; a held success counts once settled
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
        hold: bool = False,
    ) -> HeldRun | None:
        """Learn from one run; a success under a verify window is returned held instead, and so
        is any run when ``hold`` (the caller learns it later with :meth:`apply`, or never: runs
        against a task that turns out to be poison teach nothing about the farm)."""
        et = report.error_type.value
        if result.outcome == "timeout":
            self.timeouts.observe_timeout(et, strategy.strategy_id)
        after = self.sampler.latest()
        health = None
        if self.coordinator is not None and callable(getattr(self.coordinator, "health", None)):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    health = await self.coordinator.health()
        affected, recovered = len(result.affected_tasks), len(result.recovered_tasks)
        impact = impact_score(before, after, result.execution_time, affected, recovered)
        stability = stability_score(health, after)
        sample = Sample(result.success, result.execution_time, impact, stability, affected, recovered)
        row = {
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
        held = HeldRun(et, record_keys, strategy.strategy_id, sample, row)
        provisional = result.success and self.verify_window > 0
        if not (hold or provisional):
            self.apply(held)
        entry = self.attempt(
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
            provisional=provisional,
        )
        held.decision = entry
        return held if (hold or provisional) else None

    def apply(self, run: HeldRun) -> None:
        """Learn one run as it is."""
        if run.sample.success:
            self.timeouts.observe_success(run.error_type, run.strategy_id, run.sample.execution_time)
        self.perf.add(run.record_keys, run.strategy_id, run.sample)
        self.perf.record(run.row)

    def settle(self, run: HeldRun, held: bool) -> None:
        """The verify window of a held success ended: learn it as a success when it held, as a
        failure when the error recurred within it."""
        verdict = "held" if held else "recurred"
        row = dict(run.row, success=held, outcome="success" if held else "failure")
        row["context"] = dict(run.row["context"], verification=verdict)
        self.apply(replace(run, sample=replace(run.sample, success=held), row=row))
        self.counts["provisional"] = self.counts.get("provisional", 1) - 1
        outcome = "success" if held else "failure"
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if not held:
            self.counts["recurred"] = self.counts.get("recurred", 0) + 1
        run.decision.update(outcome=outcome, verification=verdict)

    def attempt(
        self,
        info: dict[str, Any],
        decision: Any,
        outcome: str,
        elapsed: float,
        extra: dict[str, Any],
        provisional: bool = False,
    ) -> dict[str, Any]:
        """Record the attempt in the recovery's info and the decision log; returns the log entry."""
        attempt = {
            "strategy_id": decision.strategy_id,
            "level": decision.level,
            "success": outcome == "success",
            "execution_time": round(elapsed, 6),
            "outcome": outcome,
            "decision": decision.to_dict(),
            **extra,
        }
        if provisional:
            attempt["verification"] = "pending"
        info["attempts"].append(attempt)
        counted = "provisional" if provisional else outcome
        self.counts[counted] = self.counts.get(counted, 0) + 1
        entry = {"error_id": info["error_id"], "at": utcnow().isoformat(), **decision.to_dict(),
                 "outcome": "provisional" if provisional else outcome}
        self.decisions.append(entry)
        return entry
