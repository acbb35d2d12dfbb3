"""Tools to evaluate selection policies: strategies with known success probabilities, and an
oracle policy that knows them. Used by the learning tests and the selection benchmarks (and
meant for checking an off-policy estimator against known truths); not part of the plugin."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from coordinator_plugins.error_handling.learning.policy import Decision, SelectionPolicy, StartChoice
from coordinator_plugins.error_handling.strategies.base import LEVEL_STRATEGIES, RecoveryLevel, RecoveryStrategy

Truth = Callable[[str, str], float]  # (error_type, strategy_id) -> success probability


class SyntheticStrategy(RecoveryStrategy):
    """Succeeds with the probability ``truth(error_type, strategy_id)``; costs a nominal
    ``duration`` (reported in details, so simulations need not sleep)."""

    def __init__(self, name: str, level: RecoveryLevel, truth: Truth, rng: random.Random, duration: float = 0.0,
                 sleep: float = 0.0) -> None:
        super().__init__(None, name, level)
        self.truth = truth
        self.rng = rng
        self.duration = duration
        self.sleep = sleep

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        if self.sleep:
            import asyncio

            await asyncio.sleep(self.sleep)
        error_info["details"]["nominal_duration"] = self.duration
        return self.rng.random() < self.truth(str(error_info["error_type"]), self.strategy_id)


class OraclePolicy(SelectionPolicy):
    """Knows the true probabilities and plans each recovery: for every start level below 5 it
    follows the escalation that runs, at each level, the candidate not run yet with the lowest
    cost per success (``cost(strategy) / p``), and starts where the expected cost until success,
    plus ``fail_cost`` if every level fails, is lowest. ``cost`` is the nominal duration by
    default (time to recovery); a constant 1 makes it minimise strategy runs."""

    name = "oracle"

    def __init__(
        self,
        truth: Truth,
        strategies: dict[str, RecoveryStrategy],
        max_level: int = 5,
        cost: Callable[[RecoveryStrategy], float] | None = None,
        fail_cost: float = 0.0,
    ) -> None:
        super().__init__(None, random.Random(0))  # type: ignore[arg-type]
        self.truth = truth
        self.strategies = strategies
        self.max_level = max_level
        self.cost = cost or (lambda s: getattr(s, "duration", 1.0) or 1e-3)
        self.fail_cost = fail_cost

    def _ratio(self, error_type: str, s: RecoveryStrategy) -> float:
        p = self.truth(error_type, s.strategy_id)
        return self.cost(s) / p if p > 0 else float("inf")

    def _pick(self, error_type: str, candidates: Sequence[RecoveryStrategy], tried: set[str]) -> RecoveryStrategy:
        fresh = [s for s in candidates if s.strategy_id not in tried] or list(candidates)
        return min(fresh, key=lambda s: (self._ratio(error_type, s), -self.truth(error_type, s.strategy_id)))

    def choose(self, candidates: Sequence[RecoveryStrategy], key: str, level: int, tried: set[str]) -> Decision:
        best = self._pick(key.split("@")[0], candidates, tried)
        return Decision(best.strategy_id, level, self.name, "knows the truth", 1.0)

    def plan(self, error_type: str, strategies: Sequence[RecoveryStrategy], start: int) -> tuple[float, str | None]:
        """(expected cost, first strategy id) of the recovery that starts at ``start``."""
        expected, reach, tried, first = 0.0, 1.0, set[str](), None
        for level in range(start, self.max_level + 1):
            cands = [s for s in strategies if s.level in LEVEL_STRATEGIES[level] and s.strategy_id not in tried]
            if not cands:
                continue
            s = self._pick(error_type, cands, tried)
            first = first or s.strategy_id
            expected += reach * self.cost(s)
            reach *= 1.0 - self.truth(error_type, s.strategy_id)
            tried.add(s.strategy_id)
        return expected + reach * self.fail_cost, first

    def start(self, key: str, strategies: Sequence[RecoveryStrategy], max_level: int) -> StartChoice:
        et = key.split("@")[0]
        plans = [(self.plan(et, strategies, lv), lv) for lv in range(1, min(4, max_level) + 1)]
        (_, first), level = min(plans, key=lambda p: (p[0][0], p[1]))
        if first is None:
            return StartChoice(1, "no strategy can run below level 5")
        decision = Decision(first, level, self.name, "knows the truth", 1.0)
        return StartChoice(level, "the plan with the lowest expected cost", decision)

    def start_level(self, key: str, max_level: int, levels: Sequence[int] = (1, 2, 3, 4, 5)) -> tuple[int, str]:
        """The planned start level alone (``choose`` then picks the plan's first strategy)."""
        start = self.start(key, list(self.strategies.values()), max_level)
        return start.level, start.reason


class UniformPolicy(SelectionPolicy):
    """Each fresh candidate with equal probability, logged with it (a logging policy for
    off-policy evaluation)."""

    name = "uniform"

    def choose(self, candidates: Any, key: str, level: int, tried: set[str]) -> Decision:
        fresh = [s for s in candidates if s.strategy_id not in tried] or list(candidates)
        pick = self.rng.choice(fresh)
        return Decision(pick.strategy_id, level, self.name, "uniform", 1.0 / len(fresh))


async def simulate_farm(db: Path, selection: str, seed: int, n: int,
                        world: dict[str, tuple[float, RecoveryLevel]]) -> tuple[float, float]:
    """``n`` recoveries of one error type with the world's strategies (id -> (success
    probability, level)) under ``selection`` (a policy name, or ``uniform``); the measured
    first-try success and strategy runs per recovery."""
    from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration, validate_config

    integ = EnhancedErrorHandlingIntegration(None, validate_config({
        "database": str(db), "auto_recover": False, "builtin_strategies": [], "escalation_backoff": 0,
        "regression_window": 0, "seed": seed, "verify_window": 0, "recovery_budget": 0,
        "selection": "ladder" if selection == "uniform" else selection}))
    rng = random.Random(seed)
    for sid, (_, level) in world.items():
        integ.add_custom_strategy(sid, SyntheticStrategy(sid, level, lambda et, s: world[s][0], rng))
    await integ.start()
    if selection == "uniform":
        integ.recovery_manager.policy = UniformPolicy(integ.performance_recovery, random.Random(seed + 1))
    firsts, runs = 0, 0
    try:
        for i in range(n):
            name = "".join(chr(97 + (i // 26**k) % 26) for k in range(3))
            _, info = await integ.handle_error(f"incident {name}", {"component": "c", "error_type": "network"})
            ran = [a for a in info["attempts"] if a["outcome"] not in ("not_applicable", "budget_exhausted")]
            firsts += ran[0]["success"]
            runs += len(ran)
    finally:
        await integ.stop()
    return firsts / n, runs / n
