"""What the adaptive policy believes about each strategy of one error key, now.

- Posterior: Beta(a, b) over the strategy's success rate, from its discounted evidence
  (``evidence.py``) and an empirical prior: the prior's mean is the key's typical success rate,
  the mean of its strategies' discounted rates shrunk towards 1/2 by one pseudo-strategy, with a
  weight of ``PRIOR_STRENGTH`` runs. On a farm where most strategies fail for an error, an
  untried strategy is expected to fail too until it shows otherwise; on a fresh key the prior is
  uniform.
- Utility: the seed's weighted score, with the success rate replaced by a draw, is
  ``base + weight * p``; an untried strategy's other terms (speed, impact, stability) are the
  means of the key's tried strategies, so it is neither favoured nor penalised for lacking them.
- The choice probability of a Thompson draw: P(one option's value is the highest), each value's
  posterior approximated by a normal distribution and the pairwise events taken as independent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from coordinator_plugins.error_handling.learning.performance import ArmStats, PerformanceTracker, score_line
from coordinator_plugins.error_handling.strategies.base import LEVEL_STRATEGIES, RecoveryLevel, RecoveryStrategy

PRIOR_STRENGTH = 2.0
_NO_DATA: dict[str, float | None] = {
    "success_rate": None,
    "execution_time": None,
    "impact_score": None,
    "stability_score": None,
    "task_recovery_rate": None,
}
_POOLED = ("execution_time", "impact_score", "stability_score")


@dataclass(slots=True)
class Belief:
    """One option: value = base + weight * p, p ~ Beta(a, b)."""

    a: float
    b: float
    base: float
    weight: float
    successes: float = 0.0  # discounted evidence behind the posterior
    runs: float = 0.0

    @property
    def mean(self) -> float:
        return self.a / (self.a + self.b)

    def shifted(self, cost: float) -> Belief:
        """The value of running this and paying ``cost`` if it fails: base - cost + (weight + cost) p."""
        return Belief(self.a, self.b, self.base - cost, self.weight + cost, self.successes, self.runs)

    def moments(self) -> tuple[float, float]:
        a, b = self.a, self.b
        var = a * b / ((a + b) ** 2 * (a + b + 1.0))
        return self.base + self.weight * self.mean, self.weight * self.weight * var


class KeyView:
    """The beliefs of one key at one version of its evidence (cached by the policy)."""

    def __init__(self, perf: PerformanceTracker, key: str) -> None:
        self.version = perf.version.get(key, 0)
        self.clock = perf.clock.get(key, 0)
        self.arms: dict[str, ArmStats] = perf.by_key.get(key, {})
        total, weight = 0.5, 1.0
        self.counts: dict[str, tuple[float, float]] = {}
        for sid, arm in self.arms.items():
            s, f = self.counts[sid] = arm.evidence.counts(self.clock)
            n = s + f
            if n > 0:
                w = n / (n + 1.0)
                total += w * s / n
                weight += w
        self.prior_mean = total / weight
        self._untried: tuple[float, float] | None = None
        self.beliefs: dict[str, Belief] = {}

    def untried_line(self) -> tuple[float, float]:
        """The score line of a strategy without runs: the tried strategies' mean terms."""
        if self._untried is None:
            tried = [arm.means() for arm in self.arms.values() if arm.n]
            pooled: dict[str, float | None] = dict(_NO_DATA)
            if tried:
                pooled.update({k: sum(m[k] or 0.0 for m in tried) / len(tried) for k in _POOLED})
            self._untried = score_line(pooled)
        return self._untried

    def belief(self, strategy_id: str) -> Belief:
        b = self.beliefs.get(strategy_id)
        if b is None:
            arm = self.arms.get(strategy_id)
            s, f = self.counts.get(strategy_id, (0.0, 0.0))
            base, weight = arm.line() if arm is not None and arm.n else self.untried_line()
            m0 = self.prior_mean
            b = self.beliefs[strategy_id] = Belief(
                PRIOR_STRENGTH * m0 + s, PRIOR_STRENGTH * (1.0 - m0) + f, base, weight, s, s + f
            )
        return b


def choice_probability(options: dict[str, Belief], best: str) -> float:
    """P(``best`` has the highest value), by the normal approximation."""
    mb, vb = options[best].moments()
    prob = 1.0
    for sid, o in options.items():
        if sid != best:
            mj, vj = o.moments()
            prob *= 0.5 * (1.0 + math.erf((mb - mj) / math.sqrt(2.0 * (vb + vj) + 1e-12)))
    return prob


# -- the first run of a recovery -------------------------------------------------------------------
RUN_COST = 0.025  # the utility a run of a LOW strategy costs a recovery; more invasive ones cost more
INVASIVENESS = {RecoveryLevel.LOW: 1.0, RecoveryLevel.MEDIUM: 2.0, RecoveryLevel.HIGH: 4.0, RecoveryLevel.CRITICAL: 8.0}
FAIL_COST = 0.25  # the utility a recovery that fails at every level costs


def plan_first(
    view: KeyView, strategies: Sequence[RecoveryStrategy], max_level: int
) -> tuple[dict[str, Belief], dict[str, int]]:
    """Value every strategy that can run below level 5 as the first run of a recovery.

    A strategy runs first at one of its levels (never 5); if it fails, the recovery escalates
    level by level, each level running its most promising strategy not run yet. Each run costs
    ``RUN_COST`` times the invasiveness of the strategy's level (doubling per level: LOW 1,
    MEDIUM 2, HIGH 4, CRITICAL 8), and a recovery that fails at every level ``FAIL_COST``. With posterior means,
    the strategy's level is the one whose continuation costs least in expectation (the lower on
    a tie): a MEDIUM strategy runs at level 2 while the levels above it may still help, and at
    level 4 once only level 5 does. Its value is its utility, minus the cost of its own run,
    minus the continuation's cost times (1 - p): least invasive first at equal evidence, and a
    strategy that leaves four more levels to fail is worth less than one that leaves one.
    Returns the options, each affine in its success rate, and each option's start level."""
    top = min(4, max_level)
    beliefs = {s.strategy_id: view.belief(s.strategy_id) for s in strategies}
    means = {sid: b.mean for sid, b in beliefs.items()}
    cost = {s.strategy_id: RUN_COST * INVASIVENESS[s.level] for s in strategies}
    by_mean = sorted(strategies, key=lambda s: -means[s.strategy_id])
    ranked: list[list[str]] = [[] for _ in range(max_level + 2)]
    for lv in range(1, max_level + 1):
        allowed = LEVEL_STRATEGIES[lv]
        ranked[lv] = [s.strategy_id for s in by_mean if s.level in allowed]

    def continuation(after: int, exclude: str) -> tuple[float, list[str]]:
        spent, reach, path = 0.0, 1.0, [exclude]
        for lv in range(after + 1, max_level + 1):
            for k in ranked[lv]:
                if k not in path:
                    spent += reach * cost[k]
                    reach *= 1.0 - means[k]
                    path.append(k)
                    break
        return spent + FAIL_COST * reach, path

    # the continuation after a level does not depend on the strategy run there unless it is on it
    shared = {lv: continuation(lv, "") for lv in range(1, top + 1)}
    options: dict[str, Belief] = {}
    levels: dict[str, int] = {}
    for s in strategies:
        sid = s.strategy_id
        best = math.inf
        for lv in range(1, top + 1):
            if s.level in LEVEL_STRATEGIES[lv]:
                after, path = shared[lv]
                if sid in path:
                    after = continuation(lv, sid)[0]
                if after < best - 1e-9:
                    best, levels[sid] = after, lv
        if sid in levels:
            b = beliefs[sid].shifted(best)
            b.base -= cost[sid]
            options[sid] = b
    return options, levels
