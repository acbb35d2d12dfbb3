"""Performance of recovery strategies: records of every attempt, and the seed's weighted score.

Score = 0.4 success rate + 0.15 time score + 0.15 (1 - impact) + 0.15 stability + 0.15 task
recovery rate; the task term is left out (weights renormalized) when no task was affected, so it
counts as neutral, not zero. Statistics are kept over a sliding window so that they follow a
system that changes. Alongside the window, each pair keeps its discounted evidence with a change
detector (``evidence.py``), which the adaptive policy samples from.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coordinator_plugins.error_handling.learning.evidence import SHIFT_KEEP, Evidence
from coordinator_plugins.error_handling.learning.record import RecoveryPerformanceRecord
from coordinator_plugins.error_handling.storage.records import StrategyRun, StrategyScore

WEIGHTS = {
    "success_rate": 0.4,
    "execution_time": 0.15,
    "impact_score": 0.15,
    "stability_score": 0.15,
    "task_recovery_rate": 0.15,
}
TIME_SCALE = 5.0  # seconds at which the time score is 0.5
WINDOW = 30


@dataclass(slots=True)
class Sample:
    success: bool
    execution_time: float
    impact: float
    stability: float
    affected: int
    recovered: int


@dataclass
class ArmStats:
    """One (error type, strategy) pair over a sliding window of attempts."""

    window: deque[Sample] = field(default_factory=lambda: deque(maxlen=WINDOW))
    total: int = 0
    total_successes: int = 0
    evidence: Evidence = field(default_factory=Evidence)
    _means: dict[str, float | None] | None = field(default=None, repr=False, compare=False)
    _line: tuple[float, float] | None = field(default=None, repr=False, compare=False)

    def add(self, s: Sample) -> None:
        self.window.append(s)
        self.total += 1
        self.total_successes += int(s.success)
        self._means = None

    @property
    def n(self) -> int:
        return len(self.window)

    @property
    def successes(self) -> int:
        return sum(1 for s in self.window if s.success)

    def means(self) -> dict[str, float | None]:
        if self._means is None:
            self._means = self._compute_means()
            self._line = None
        return self._means

    def line(self) -> tuple[float, float]:
        """``score_line`` of the window's means (cached until the window changes)."""
        means = self.means()
        if self._line is None:
            self._line = score_line(means)
        return self._line

    def _compute_means(self) -> dict[str, float | None]:
        n = len(self.window)
        if n == 0:
            return {
                "success_rate": None,
                "execution_time": None,
                "impact_score": None,
                "stability_score": None,
                "task_recovery_rate": None,
            }
        ok = [s for s in self.window if s.success]
        affected = sum(s.affected for s in self.window)
        return {
            "success_rate": len(ok) / n,
            # Time to recover counts successful runs; failures say little about a working run's speed.
            "execution_time": sum(s.execution_time for s in (ok or self.window)) / len(ok or self.window),
            "impact_score": sum(s.impact for s in self.window) / n,
            "stability_score": sum(s.stability for s in self.window) / n,
            "task_recovery_rate": (sum(s.recovered for s in self.window) / affected) if affected else None,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "total_successes": self.total_successes,
            "evidence": self.evidence.to_json(),
            "window": [
                [
                    int(s.success),
                    round(s.execution_time, 5),
                    round(s.impact, 4),
                    round(s.stability, 4),
                    s.affected,
                    s.recovered,
                ]
                for s in self.window
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArmStats:
        arm = cls(total=int(data.get("total", 0)), total_successes=int(data.get("total_successes", 0)))
        for row in data.get("window", [])[-WINDOW:]:
            arm.window.append(
                Sample(bool(row[0]), float(row[1]), float(row[2]), float(row[3]), int(row[4]), int(row[5]))
            )
        if isinstance(data.get("evidence"), dict):
            arm.evidence = Evidence.from_json(data["evidence"])
        else:  # written before evidence was kept: start from the window
            arm.evidence = Evidence(successes=float(arm.successes), failures=float(arm.n - arm.successes))
        return arm


def time_score(seconds: float) -> float:
    return 1.0 / (1.0 + max(0.0, seconds) / TIME_SCALE)


def weighted_score(means: dict[str, float | None], success_rate: float | None = None) -> float:
    """The seed's weighted score from window means; ``success_rate`` may replace the measured one
    (the adaptive policy passes a Thompson sample)."""
    sr = success_rate if success_rate is not None else means["success_rate"]
    terms = {
        "success_rate": 0.5 if sr is None else sr,
        "execution_time": 0.5 if means["execution_time"] is None else time_score(means["execution_time"]),
        "impact_score": 0.5 if means["impact_score"] is None else 1.0 - means["impact_score"],
        "stability_score": 0.5 if means["stability_score"] is None else means["stability_score"],
    }
    weights = dict(WEIGHTS)
    if means["task_recovery_rate"] is None:
        del weights["task_recovery_rate"]
    else:
        terms["task_recovery_rate"] = means["task_recovery_rate"]
    total = sum(weights.values())
    return sum(weights[k] * terms[k] for k in weights) / total


def score_line(means: dict[str, float | None]) -> tuple[float, float]:
    """The weighted score as a line in the success rate p: (base, weight), score = base + weight * p."""
    base = weighted_score(means, 0.0)
    return base, weighted_score(means, 1.0) - base


def impact_score(
    before: dict[str, Any], after: dict[str, Any], execution_time: float, affected: int, recovered: int
) -> float:
    """The seed's impact formula: memory, CPU, time and task terms, each capped, summed to <= 1."""
    memory = min(abs(after.get("memory_percent", 0.0) - before.get("memory_percent", 0.0)) / 100.0, 0.25)
    cpu = min(abs(after.get("cpu_percent", 0.0) - before.get("cpu_percent", 0.0)) / 100.0, 0.25)
    elapsed = min(execution_time / 240.0, 0.25)
    tasks = 0.0
    if affected:
        tasks = min(affected / 20.0, 0.125) + 0.125 * (1.0 - recovered / affected)
    return min(1.0, memory + cpu + elapsed + tasks)


def stability_score(health: dict[str, Any] | None, sample: dict[str, Any]) -> float:
    """How healthy the coordinator is after a run: its components, database, and CPU headroom."""
    cpu_term = 1.0 - min(1.0, max(0.0, sample.get("cpu_percent", 0.0) - 80.0) / 20.0)
    if not health:
        return cpu_term
    comps = health.get("components") or {}
    comp_frac = (sum(1 for v in comps.values() if v) / len(comps)) if comps else 1.0
    db = 1.0 if health.get("database", True) else 0.0
    return 0.5 * comp_frac + 0.25 * db + 0.25 * cpu_term


class PerformanceTracker:
    """Keeps arm statistics per (error key, strategy) and writes scores and records to the store.

    Each key has a clock that ticks once per run recorded for it (the evidence's discount runs on
    it) and a version that changes whenever any of its evidence does (for caches)."""

    def __init__(
        self,
        save_score: Callable[[StrategyScore], Any] | None = None,
        record_run: Callable[[StrategyRun], Any] | None = None,
    ) -> None:
        self.arms: dict[tuple[str, str], ArmStats] = {}
        self.by_key: dict[str, dict[str, ArmStats]] = {}
        self.clock: dict[str, int] = {}
        self.version: dict[str, int] = {}
        self.save_score = save_score
        self.record_run = record_run
        self.skipped = 0  # stored scores whose evidence could not be read (left out)

    def arm(self, key: str, strategy_id: str) -> ArmStats:
        a = self.arms.get((key, strategy_id))
        if a is None:
            a = self.arms[(key, strategy_id)] = ArmStats()
            self.by_key.setdefault(key, {})[strategy_id] = a
        return a

    def _touch(self, key: str) -> None:
        self.version[key] = self.version.get(key, 0) + 1

    def score(self, key: str, strategy_id: str) -> float | None:
        a = self.arms.get((key, strategy_id))
        if a is None or a.n == 0:
            return None
        return weighted_score(a.means())

    def add(self, keys: list[str], strategy_id: str, sample: Sample) -> None:
        for key in keys:
            clock = self.clock[key] = self.clock.get(key, 0) + 1
            arm = self.arm(key, strategy_id)
            arm.add(sample)
            changed = arm.evidence.observe(sample.success, clock)
            self._touch(key)
            self._save(key, strategy_id, arm)
            if changed:  # what worked stopped working: the key's other evidence may be stale too
                for sid, other in self.by_key[key].items():
                    if sid != strategy_id:
                        other.evidence.shrink(SHIFT_KEEP, clock)
                        self._save(key, sid, other)

    def _save(self, key: str, strategy_id: str, arm: ArmStats) -> None:
        if self.save_score is not None:
            means = arm.means()
            self.save_score(
                StrategyScore(key, strategy_id, weighted_score(means), arm.total, {"means": means, **arm.to_json()})
            )

    def record(self, row: dict[str, Any]) -> None:
        """Store one run (the learner's dict of it) as a RecoveryPerformanceRecord."""
        if self.record_run is not None:
            self.record_run(RecoveryPerformanceRecord.of(row).to_run())

    def load(self, scores: list[StrategyScore]) -> None:
        for rec in scores:
            key, strategy_id = rec.key, rec.strategy_id
            try:
                arm = ArmStats.from_json(dict(rec.metrics))
            except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError):
                self.skipped += 1
                continue
            self.arms[(key, strategy_id)] = arm
            self.by_key.setdefault(key, {})[strategy_id] = arm
            # the clock only ticks when an arm of the key is stamped, so its last value is the largest stamp
            self.clock[key] = max(self.clock.get(key, 0), arm.evidence.stamp)
            self._touch(key)
