"""``RecoveryPerformanceRecord``: one run of a recovery strategy, as the seed design names it.

It is what the plugin records per run (``PerformanceTracker.record`` builds one and stores it as
a :class:`~coordinator_plugins.error_handling.storage.records.StrategyRun`, a row of
``recovery_performance``), and what a stored run reads back as (``from_run``). The constructor
is the design's: ``(strategy_id, strategy_name, error_type, execution_time, success,
hardware_id=None, affected_tasks=0, recovered_tasks=0)``; the rest of a run (its time, resource
usage, impact and stability scores, context, and this plugin's outcome, group and level) are
keyword fields with the seed's defaults, and ``to_dict`` gives the seed's keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from coordinator_plugins.error_handling.model import iso, utcnow
from coordinator_plugins.error_handling.storage.records import StrategyRun

OUTCOMES = ("success", "failure", "timeout", "error", "not_applicable", "budget_exhausted")


@dataclass(slots=True)
class RecoveryPerformanceRecord:
    strategy_id: str
    strategy_name: str
    error_type: str
    execution_time: float
    success: bool
    hardware_id: str | None = None
    affected_tasks: int = 0
    recovered_tasks: int = 0
    timestamp: datetime = field(default_factory=utcnow)
    resource_usage: dict[str, Any] = field(default_factory=dict)
    impact_score: float = 0.0
    stability_score: float = 1.0
    context: dict[str, Any] = field(default_factory=dict)
    outcome: str = ""  # "" = "success" or "failure", as ``success`` says
    error_id: str | None = None
    level: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.strategy_id, str) or not self.strategy_id:
            raise ValueError("RecoveryPerformanceRecord.strategy_id: expected a non-empty string")
        if not isinstance(self.success, bool):
            raise ValueError(f"RecoveryPerformanceRecord.success: expected true or false, got {self.success!r}")
        if self.execution_time < 0:
            raise ValueError("RecoveryPerformanceRecord.execution_time: expected seconds >= 0")
        self.outcome = self.outcome or ("success" if self.success else "failure")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"RecoveryPerformanceRecord.outcome: {self.outcome!r} is not one of {', '.join(OUTCOMES)}")

    @classmethod
    def of(cls, run: dict[str, Any]) -> RecoveryPerformanceRecord:
        """From the learner's dict of a run (``learn.Learner``: the keys of this class)."""
        return cls(
            run["strategy_id"], run["strategy_name"], run["error_type"], run["execution_time"], run["success"],
            run.get("hardware_id"), run["affected_tasks"], run["recovered_tasks"],
            resource_usage=dict(run["resource_usage"]), impact_score=run["impact_score"],
            stability_score=run["stability_score"], context=dict(run["context"]), outcome=run["outcome"],
            error_id=run["error_id"], level=run["level"],
        )

    @classmethod
    def from_run(cls, run: StrategyRun) -> RecoveryPerformanceRecord:
        """A stored run (``Store.strategy_runs``) as a record."""
        return cls(
            run.strategy_id, run.strategy_name, run.error_type, run.execution_time, run.success, run.hardware_id,
            run.affected_tasks, run.recovered_tasks, timestamp=run.timestamp, resource_usage=dict(run.resource_usage),
            impact_score=run.impact_score, stability_score=run.stability_score, context=dict(run.context),
            outcome=run.outcome, error_id=run.error_id, level=run.level,
        )

    def to_run(self) -> StrategyRun:
        """The record as the store keeps it (one ``recovery_performance`` row)."""
        return StrategyRun(
            strategy_id=self.strategy_id, strategy_name=self.strategy_name, error_type=self.error_type,
            execution_time=float(self.execution_time), success=self.success, affected_tasks=self.affected_tasks,
            recovered_tasks=self.recovered_tasks, impact_score=self.impact_score,
            stability_score=self.stability_score, outcome=self.outcome, error_id=self.error_id, level=self.level,
            hardware_id=self.hardware_id, resource_usage=dict(self.resource_usage), context=dict(self.context),
            timestamp=self.timestamp,
        )

    def to_dict(self) -> dict[str, Any]:
        """The seed's keys (``timestamp`` as ISO-8601 UTC), and ``outcome``, ``error_id``, ``level``."""
        return {
            "strategy_id": self.strategy_id, "strategy_name": self.strategy_name, "error_type": self.error_type,
            "execution_time": self.execution_time, "success": self.success, "timestamp": iso(self.timestamp),
            "hardware_id": self.hardware_id, "affected_tasks": self.affected_tasks,
            "recovered_tasks": self.recovered_tasks, "resource_usage": dict(self.resource_usage),
            "impact_score": self.impact_score, "stability_score": self.stability_score, "context": dict(self.context),
            "outcome": self.outcome, "error_id": self.error_id, "level": self.level,
        }
