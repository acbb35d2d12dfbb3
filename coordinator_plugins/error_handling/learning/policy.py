"""Strategy selection: ``ladder`` (fixed order), ``score`` (the seed's greedy score) and ``adaptive``.

``adaptive`` is Thompson sampling over each (error key, strategy) pair's sliding window: it draws
a success rate from Beta(1 + successes, 1 + failures) and plugs it into the weighted score, so it
explores while unsure, settles on what works, and follows a system that changes. It also learns,
per error key, which level to start a new group at, so that levels that keep failing are skipped;
it never starts at level 5.
"""

from __future__ import annotations

import json
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from coordinator_plugins.error_handling.learning.performance import PerformanceTracker, weighted_score
from coordinator_plugins.error_handling.model import utcnow
from coordinator_plugins.error_handling.strategies.base import LEVEL_STRATEGIES, RecoveryStrategy

LEVEL_WINDOW = 20
SKIP_BELOW = 0.2  # a level whose sampled success rate is below this is skipped at the start
_NO_DATA: dict[str, float | None] = {
    "success_rate": None,
    "execution_time": None,
    "impact_score": None,
    "stability_score": None,
    "task_recovery_rate": None,
}


@dataclass(slots=True)
class Decision:
    strategy_id: str
    level: int
    policy: str
    reason: str
    probability: float
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy_id": self.strategy_id,
            "level": self.level,
            "policy": self.policy,
            "reason": self.reason,
            "probability": round(self.probability, 4),
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
        }


class SelectionPolicy:
    name = "base"

    def __init__(self, perf: PerformanceTracker, rng: random.Random) -> None:
        self.perf = perf
        self.rng = rng

    def choose(self, candidates: Sequence[RecoveryStrategy], key: str, level: int, tried: set[str]) -> Decision:
        raise NotImplementedError

    def start_level(self, key: str, max_level: int, levels: Sequence[int] = (1, 2, 3, 4, 5)) -> tuple[int, str]:
        """The level a new group starts at; ``levels`` are those that have candidate strategies."""
        return 1, "new groups start at level 1"

    def record_level(self, key: str, level: int, success: bool) -> None:
        """Outcome of one level of one recovery (used by learners)."""

    def explain(self, candidates: Sequence[RecoveryStrategy], key: str, level: int) -> list[dict[str, Any]]:
        return []


def _sid(s: RecoveryStrategy) -> str:
    return s.strategy_id


class LadderPolicy(SelectionPolicy):
    """The fixed ladder: the first candidate in registration order not yet run in this recovery."""

    name = "ladder"

    def choose(self, candidates: Sequence[RecoveryStrategy], key: str, level: int, tried: set[str]) -> Decision:
        fresh = [s for s in candidates if _sid(s) not in tried] or list(candidates)
        return Decision(_sid(fresh[0]), level, self.name, "first in registration order", 1.0)


class ScorePolicy(SelectionPolicy):
    """The seed's greedy choice: highest weighted score, plus a bonus for the least invasive
    strategy level that the progressive level allows. An untried strategy scores a neutral 0.5."""

    name = "score"
    LEVEL_BONUS = 0.1

    def _score(self, s: RecoveryStrategy, key: str, level: int) -> float:
        base = self.perf.score(key, _sid(s))
        bonus = self.LEVEL_BONUS if s.level == LEVEL_STRATEGIES[level][0] else 0.0
        return (0.5 if base is None else base) + bonus

    def choose(self, candidates: Sequence[RecoveryStrategy], key: str, level: int, tried: set[str]) -> Decision:
        fresh = [s for s in candidates if _sid(s) not in tried] or list(candidates)
        scores = {_sid(s): self._score(s, key, level) for s in fresh}
        best = max(fresh, key=lambda s: scores[_sid(s)])
        return Decision(_sid(best), level, self.name, f"highest score {scores[_sid(best)]:.3f}", 1.0, scores)

    def explain(self, candidates: Sequence[RecoveryStrategy], key: str, level: int) -> list[dict[str, Any]]:
        return [{"strategy_id": _sid(s), "score": round(self._score(s, key, level), 4)} for s in candidates]


class AdaptivePolicy(SelectionPolicy):
    """Thompson sampling on the weighted score, and a learned start level."""

    name = "adaptive"

    def __init__(
        self,
        perf: PerformanceTracker,
        rng: random.Random,
        persist: Callable[[str, Any, tuple[Any, ...]], Any] | None = None,
    ) -> None:
        super().__init__(perf, rng)
        self.levels: dict[str, dict[int, deque[bool]]] = {}
        self.persist = persist

    def _params(self, s: RecoveryStrategy, key: str) -> tuple[int, int, float, float]:
        """(successes, samples, base, weight): the utility of a success rate p is base + weight * p."""
        arm = self.perf.arms.get((key, _sid(s)))
        means = arm.means() if arm is not None and arm.n else _NO_DATA
        base = weighted_score(means, 0.0)
        weight = weighted_score(means, 1.0) - base
        return (arm.successes, arm.n, base, weight) if arm is not None and arm.n else (0, 0, base, weight)

    def _choice_probability(self, params: dict[str, tuple[int, int, float, float]], best: str) -> float:
        """P(best has the highest utility), each posterior approximated by a normal distribution."""

        def moments(p: tuple[int, int, float, float]) -> tuple[float, float]:
            a, b = 1 + p[0], 1 + p[1] - p[0]
            mean = a / (a + b)
            var = a * b / ((a + b) ** 2 * (a + b + 1))
            return p[2] + p[3] * mean, (p[3] ** 2) * var

        mb, vb = moments(params[best])
        prob = 1.0
        for sid, p in params.items():
            if sid != best:
                mj, vj = moments(p)
                prob *= 0.5 * (1.0 + math.erf((mb - mj) / math.sqrt(2.0 * (vb + vj) + 1e-12)))
        return prob

    def choose(self, candidates: Sequence[RecoveryStrategy], key: str, level: int, tried: set[str]) -> Decision:
        fresh = [s for s in candidates if _sid(s) not in tried] or list(candidates)
        params = {_sid(s): self._params(s, key) for s in fresh}
        draws = {sid: p[2] + p[3] * self.rng.betavariate(1 + p[0], 1 + p[1] - p[0]) for sid, p in params.items()}
        best = max(draws, key=lambda k: draws[k])
        if len(fresh) == 1:
            return Decision(best, level, self.name, "only candidate left at this level", 1.0, draws)
        succ, n = params[best][0], params[best][1]
        reason = f"Thompson draw {draws[best]:.3f} highest of {len(fresh)}; " + (
            f"{succ}/{n} recent successes" if n else "untried: exploring"
        )
        return Decision(best, level, self.name, reason, self._choice_probability(params, best), draws)

    def explain(self, candidates: Sequence[RecoveryStrategy], key: str, level: int) -> list[dict[str, Any]]:
        params = {_sid(s): self._params(s, key) for s in candidates}
        return [
            {"strategy_id": sid, "choice_probability": round(self._choice_probability(params, sid), 3)}
            for sid in params
        ]

    # -- start level -------------------------------------------------------------------------
    def _level_window(self, key: str, level: int) -> deque[bool]:
        return self.levels.setdefault(key, {}).setdefault(level, deque(maxlen=LEVEL_WINDOW))

    def record_level(self, key: str, level: int, success: bool) -> None:
        self._level_window(key, level).append(success)
        if self.persist is not None:
            state = {str(lv): [int(x) for x in w] for lv, w in self.levels[key].items()}
            self.persist("learner", f"levels:{key}", (f"levels:{key}", json.dumps(state), utcnow()))

    def start_level(self, key: str, max_level: int, levels: Sequence[int] = (1, 2, 3, 4, 5)) -> tuple[int, str]:
        top = max(1, min(4, max_level))
        usable = [lv for lv in sorted(levels) if lv <= top]
        if not usable:
            return 1, "no level below 5 has a candidate strategy: start at level 1"
        skipped: list[int] = []
        for level in usable:
            w = self._level_window(key, level)
            succ = sum(w)
            q = self.rng.betavariate(1 + succ, 1 + len(w) - succ)
            if len(w) < 3 or q >= SKIP_BELOW or level == usable[-1]:
                if skipped:
                    return level, (
                        f"levels {skipped} skipped: they kept failing for {key} (sampled success below {SKIP_BELOW})"
                    )
                return level, "start at level 1: lower levels have not been shown to fail"
            skipped.append(level)
        return top, "start level capped below 5"

    def load(self, rows: list[tuple[str, str]]) -> None:
        for k, state in rows:
            if not k.startswith("levels:"):
                continue
            try:
                data = json.loads(state) if isinstance(state, str) else state
                self.levels[k[len("levels:") :]] = {
                    int(lv): deque((bool(x) for x in vals), maxlen=LEVEL_WINDOW) for lv, vals in data.items()
                }
            except (ValueError, TypeError, AttributeError):
                continue

    def level_summary(self) -> dict[str, dict[str, Any]]:
        return {
            k: {str(lv): {"attempts": len(w), "successes": sum(w)} for lv, w in sorted(v.items())}
            for k, v in self.levels.items()
        }


def make_policy(
    name: str,
    perf: PerformanceTracker,
    rng: random.Random,
    persist: Callable[[str, Any, tuple[Any, ...]], Any] | None = None,
) -> SelectionPolicy:
    if name == "ladder":
        return LadderPolicy(perf, rng)
    if name == "score":
        return ScorePolicy(perf, rng)
    if name == "adaptive":
        return AdaptivePolicy(perf, rng, persist)
    raise ValueError(f"selection: unknown policy {name!r}; accepted: adaptive, score, ladder")
