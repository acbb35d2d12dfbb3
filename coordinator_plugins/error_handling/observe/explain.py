"""Explanations: why each strategy would or would not be chosen now, with the evidence behind
it (``GET /recovery/strategies``, ``get_strategy_recommendations``)."""

from __future__ import annotations

from typing import Any

from coordinator_plugins.error_handling.learning.performance import PerformanceTracker
from coordinator_plugins.error_handling.learning.policy import AdaptivePolicy, SelectionPolicy
from coordinator_plugins.error_handling.learning.timeouts import AdaptiveTimeouts
from coordinator_plugins.error_handling.recovery.budget import RecoveryBudget
from coordinator_plugins.error_handling.recovery.manager import RecoveryManager
from coordinator_plugins.error_handling.strategies.base import (
    CATEGORY_VALUES,
    LEVEL_STRATEGIES,
    RecoveryStrategy,
    declared_pure,
)


def _levels_of(strategy_level: Any) -> list[int]:
    return [lv for lv, allowed in LEVEL_STRATEGIES.items() if strategy_level in allowed]


class Explainer:
    def __init__(
        self,
        recovery: RecoveryManager,
        perf: PerformanceTracker,
        policy: SelectionPolicy,
        timeouts: AdaptiveTimeouts,
        budget: RecoveryBudget,
        max_level: int,
    ) -> None:
        self.recovery = recovery
        self.perf = perf
        self.policy = policy
        self.timeouts = timeouts
        self.budget = budget
        self.max_level = max_level

    def recommendations(self, error_type: str) -> list[dict[str, Any]]:
        """Strategies for one error type, best first, with the evidence behind each."""
        perf = self.perf
        out: list[dict[str, Any]] = []
        for sid, s in self.recovery.strategies.items():
            arm = perf.arms.get((error_type, sid))
            means = arm.means() if arm else {}
            score = perf.score(error_type, sid)
            out.append(
                {
                    "strategy_id": sid,
                    "strategy_name": s.name,
                    "level": s.level.value,
                    "progressive_levels": _levels_of(s.level),
                    "samples": arm.n if arm else 0,
                    "total_runs": arm.total if arm else 0,
                    "success_rate": means.get("success_rate"),
                    "avg_execution_time": means.get("execution_time"),
                    "score": score,
                    "timeout": self.timeouts.get(error_type, sid),
                }
            )
        out.sort(key=lambda r: (r["score"] is None, -(r["score"] or 0.0)))
        return out

    def explain(self, error_type: str | None) -> dict[str, Any]:
        """For each error type: each strategy, its evidence, and why it would or would not run now."""
        rm = self.recovery
        policy = self.policy
        known = {k.split("@")[0] for (k, _) in self.perf.arms}
        types = [error_type] if error_type else sorted(known | {"network", "worker", "database", "timeout"})
        max_level = self.max_level
        result: dict[str, Any] = {}
        for et in types:
            entries = {r["strategy_id"]: r for r in self.recommendations(et)}
            start_level, start_reason = 1, "new groups start at level 1"
            first: list[dict[str, Any]] = []
            runnable = []
            for s in rm.strategies.values():  # one that cannot run gets no probability, and says why
                why_not = cannot_run(s, et)
                if why_not is None:
                    runnable.append(s)
                else:
                    entries[s.strategy_id]["cannot_run"] = why_not
            if isinstance(policy, AdaptivePolicy):
                first = policy.first_choices(et, runnable, max_level)
                if first:
                    start_level = first[0]["level"]
                    start_reason = (
                        f"a new group most likely starts at level {start_level} with {first[0]['strategy_id']} "
                        f"(probability {first[0]['probability']:.2f}); the first strategy is drawn among every "
                        "strategy that can run below level 5"
                    )
                for row in first:
                    entries[row["strategy_id"]]["first_choice"] = {"level": row["level"],
                                                                   "probability": row["probability"]}
            for level in range(1, max_level + 1):
                cands = [s for s in runnable if s.level in LEVEL_STRATEGIES[level]]
                for row in policy.explain(cands, et, level):
                    entries[row["strategy_id"]].setdefault("by_level", {})[str(level)] = row
            for entry in entries.values():
                entry["why"] = _why(entry, policy.name)
            result[et] = {
                "start_level": start_level,
                "start_reason": start_reason,
                "first_choice": first,
                "evidence": policy.key_summary(et) if isinstance(policy, AdaptivePolicy) else {},
                "strategies": list(entries.values()),
            }
        return {
            "selection": policy.name,
            "error_types": result,
            "recent_decisions": list(rm.decisions)[-20:],
            "budget": self.budget.status(),
        }


def _noop() -> None:
    return None


def cannot_run(strategy: RecoveryStrategy, error_type: str) -> str | None:
    """Why ``strategy`` can act on no error of ``error_type`` whatever it names, or None when it
    may. Asked of the declared categories, and of a check declared pure (one that answers from
    the error's keys and what the strategy was built with, as the built-ins'), given every
    target a report can name; another check is never called here (it may do I/O)."""
    cats = strategy.categories
    if cats is not None and not cats:
        return "it declares no error category it can act on"
    if not declared_pure(strategy):
        return None
    for category in sorted(cats if cats is not None else CATEGORY_VALUES):
        probe = {"category": category, "error_type": error_type, "worker_ids": ["?"], "worker_id": "?",
                 "task_ids": ["?"], "task_id": "?", "callable": _noop, "args": (), "kwargs": {}}
        try:
            if strategy.is_applicable(probe) is True:
                return None
        except Exception:
            return None  # left to the recovery to ask
    return ("its is_applicable is False for every error of this type, whatever it names "
            "(for a built-in: the coordinator lacks the methods it acts through, or there is none)")


def _why(entry: dict[str, Any], policy: str) -> str:
    if entry.get("cannot_run"):
        return "cannot run: " + entry["cannot_run"]
    levels = entry["progressive_levels"]
    if policy == "ladder":
        return f"runs in registration order at levels {levels}"
    first = entry.get("first_choice")
    opening = (
        f"; first for a new group with probability {first['probability']:.2f} (at level {first['level']})"
        if first
        else ("; never first: it runs only at level 5, after the levels below failed" if policy == "adaptive" else "")
    )
    n = entry["samples"]
    if n == 0:
        return (
            "untried: scored as a neutral 0.5"
            if policy == "score"
            else "untried: its prior gives it a chance to be explored" + opening
        )
    sr = entry["success_rate"] or 0.0
    probs = [v.get("choice_probability") for v in entry.get("by_level", {}).values() if "choice_probability" in v]
    chance = f"; chosen at a level it shares with others with probability up to {max(probs):.2f}" if probs else ""
    return f"{sr:.0%} success over its last {n} runs, score {entry['score']:.3f}{opening}{chance}"
