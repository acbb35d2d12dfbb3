"""Tools to evaluate selection policies: strategies with known success probabilities, and an
oracle policy that knows them. Used by the selection benchmark and the learning tests."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from coordinator_plugins.error_handling.learning.policy import Decision, SelectionPolicy
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
    """Knows the true probabilities: starts at the level of the best strategy and picks the one
    with the best expected cost per success (duration / probability)."""

    name = "oracle"

    def __init__(self, truth: Truth, strategies: dict[str, RecoveryStrategy], max_level: int = 5) -> None:
        super().__init__(None, random.Random(0))  # type: ignore[arg-type]
        self.truth = truth
        self.strategies = strategies
        self.max_level = max_level
        self.current_type = ""

    def _cost(self, s: RecoveryStrategy) -> float:
        p = self.truth(self.current_type, s.strategy_id)
        d = getattr(s, "duration", 1.0) or 1e-3
        return d / p if p > 0 else float("inf")

    def choose(self, candidates: Sequence[RecoveryStrategy], key: str, level: int, tried: set[str]) -> Decision:
        self.current_type = key.split("@")[0]
        fresh = [s for s in candidates if s.strategy_id not in tried] or list(candidates)
        best = min(fresh, key=self._cost)
        return Decision(best.strategy_id, level, self.name, "knows the truth", 1.0)

    def start_level(self, key: str, max_level: int, levels: Sequence[int] = (1, 2, 3, 4, 5)) -> tuple[int, str]:
        self.current_type = key.split("@")[0]
        best = min(self.strategies.values(), key=self._cost)
        levels = [lv for lv, allowed in LEVEL_STRATEGIES.items() if best.level in allowed and lv <= min(4, max_level)]
        return (min(levels) if levels else 1), "the best strategy's lowest level"
