"""Strategy selection: ``ladder`` (fixed order), ``score`` (the seed's greedy score) and ``adaptive``.

``adaptive`` is Thompson sampling: for each (error key, strategy) pair it draws a success rate
from a Beta posterior over the pair's discounted evidence (``evidence.py``, with change
detection) and an empirical prior (``belief.py``), and plugs the draw into the seed's weighted
score, so it explores while unsure, settles on what works, and follows a farm that changes.
The first strategy of a new group is drawn the same way among every strategy that can run below
level 5, valued with what escalating after it would cost, and the group starts at that
strategy's level: levels below are skipped, not run, and never level 5 (SPEC 3). A skipped
strategy keeps being drawn: its evidence decays, so its posterior widens and it is tried again.
Every decision carries its reason and its choice probability.

After a migration from the seed framework, a new group's first strategy is the seed's top-scored
one until this plugin's own runs of it fail (``seedprior.py``); ``adaptive`` and ``score`` keep
that rule, ``ladder`` keeps its fixed order.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from coordinator_plugins.error_handling.learning.belief import Belief, KeyView, choice_probability, plan_first
from coordinator_plugins.error_handling.learning.performance import PerformanceTracker
from coordinator_plugins.error_handling.learning.seedprior import PRIOR_KEY, SeedPrior
from coordinator_plugins.error_handling.learning.thompson import win_probabilities
from coordinator_plugins.error_handling.storage.records import LearnerRecord
from coordinator_plugins.error_handling.strategies.base import LEVEL_STRATEGIES, RecoveryStrategy


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


@dataclass(slots=True)
class StartChoice:
    """Where a new group's recovery starts, why, and (for policies that choose it up front) its
    first decision."""

    level: int
    reason: str
    decision: Decision | None = None


class SelectionPolicy:
    name = "base"

    def __init__(self, perf: PerformanceTracker, rng: random.Random) -> None:
        self.perf = perf
        self.rng = rng
        self.prior: SeedPrior | None = None  # the seed's first choices, after a migration

    def load(self, rows: list[LearnerRecord]) -> None:
        """State kept in learner rows: the seed's first choices (written by a seed migration)."""
        for row in rows:
            if row.key == PRIOR_KEY:
                self.prior = SeedPrior.from_state(row.state)

    def seed_first(self, key: str, options: Sequence[str]) -> tuple[str, float] | None:
        """The seed's first choice among ``options`` while it holds (see ``seedprior``)."""
        return self.prior.pick(self.perf, key, options) if self.prior is not None else None

    def choose(self, candidates: Sequence[RecoveryStrategy], key: str, level: int, tried: set[str]) -> Decision:
        raise NotImplementedError

    def start_level(self, key: str, max_level: int, levels: Sequence[int] = (1, 2, 3, 4, 5)) -> tuple[int, str]:
        """The level a new group starts at; ``levels`` are those that have candidate strategies."""
        return 1, "new groups start at level 1"

    def start(self, key: str, strategies: Sequence[RecoveryStrategy], max_level: int) -> StartChoice:
        """The start of a new group's recovery among ``strategies`` (those that may run for it)."""
        levels = [lv for lv, allowed in LEVEL_STRATEGIES.items() if any(s.level in allowed for s in strategies)]
        return StartChoice(*self.start_level(key, max_level, levels))

    def record_level(self, key: str, level: int, success: bool) -> None:
        """Outcome of one level of one recovery, for policies that learn per level (the built-in
        ones learn from the strategy evidence in ``perf`` instead)."""

    def explain(self, candidates: Sequence[RecoveryStrategy], key: str, level: int) -> list[dict[str, Any]]:
        return []

    def probabilities(
        self, candidates: Sequence[RecoveryStrategy], key: str, level: int, tried: set[str]
    ) -> dict[str, float]:
        """The probability with which ``choose`` would pick each candidate now, summing to 1
        (off-policy evaluation asks it; the adaptive policy's are exact, ``thompson``, where the
        probability its decisions log is a cheap approximation). A policy that cannot say raises
        NotImplementedError."""
        raise NotImplementedError(f"policy {self.name!r} does not state its choice probabilities")


def _sid(s: RecoveryStrategy) -> str:
    return s.strategy_id


class LadderPolicy(SelectionPolicy):
    """The fixed ladder: the first candidate in registration order not yet run in this recovery."""

    name = "ladder"

    def choose(self, candidates: Sequence[RecoveryStrategy], key: str, level: int, tried: set[str]) -> Decision:
        fresh = [s for s in candidates if _sid(s) not in tried] or list(candidates)
        return Decision(_sid(fresh[0]), level, self.name, "first in registration order", 1.0)

    def probabilities(
        self, candidates: Sequence[RecoveryStrategy], key: str, level: int, tried: set[str]
    ) -> dict[str, float]:
        return {self.choose(candidates, key, level, tried).strategy_id: 1.0}


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
        if not tried and (seeded := self.seed_first(key, list(scores))) is not None:
            return Decision(seeded[0], level, self.name, _SEED_REASON.format(score=seeded[1]), 1.0, scores)
        best = max(fresh, key=lambda s: scores[_sid(s)])
        return Decision(_sid(best), level, self.name, f"highest score {scores[_sid(best)]:.3f}", 1.0, scores)

    def explain(self, candidates: Sequence[RecoveryStrategy], key: str, level: int) -> list[dict[str, Any]]:
        return [{"strategy_id": _sid(s), "score": round(self._score(s, key, level), 4)} for s in candidates]

    def probabilities(
        self, candidates: Sequence[RecoveryStrategy], key: str, level: int, tried: set[str]
    ) -> dict[str, float]:
        return {self.choose(candidates, key, level, tried).strategy_id: 1.0}  # greedy: no draw


class AdaptivePolicy(SelectionPolicy):
    """Thompson sampling on the weighted score, over discounted evidence with change detection;
    the first strategy of a new group is chosen among every strategy that can run below level 5,
    and the group starts at the level that strategy runs at."""

    name = "adaptive"

    def __init__(self, perf: PerformanceTracker, rng: random.Random) -> None:
        super().__init__(perf, rng)
        self._views: dict[str, KeyView] = {}

    def view(self, key: str) -> KeyView:
        v = self._views.get(key)
        if v is None or v.version != self.perf.version.get(key, 0):
            v = self._views[key] = KeyView(self.perf, key)
        return v

    def _draw(self, options: dict[str, Belief]) -> dict[str, float]:
        return {sid: o.base + o.weight * self.rng.betavariate(o.a, o.b) for sid, o in options.items()}

    def choose(self, candidates: Sequence[RecoveryStrategy], key: str, level: int, tried: set[str]) -> Decision:
        fresh = [s for s in candidates if _sid(s) not in tried] or list(candidates)
        view = self.view(key)
        options = {_sid(s): view.belief(_sid(s)) for s in fresh}
        draws = self._draw(options)
        best = max(draws, key=lambda k: draws[k])
        if len(fresh) == 1:
            return Decision(best, level, self.name, "only candidate left at this level", 1.0, draws)
        reason = f"Thompson draw {draws[best]:.3f} highest of {len(fresh)}; " + _evidence(options[best])
        return Decision(best, level, self.name, reason, choice_probability(options, best), draws)

    def explain(self, candidates: Sequence[RecoveryStrategy], key: str, level: int) -> list[dict[str, Any]]:
        view = self.view(key)
        options = {_sid(s): view.belief(_sid(s)) for s in candidates}
        return [
            {"strategy_id": sid, "choice_probability": round(choice_probability(options, sid), 3)} for sid in options
        ]

    def probabilities(
        self, candidates: Sequence[RecoveryStrategy], key: str, level: int, tried: set[str]
    ) -> dict[str, float]:
        fresh = [s for s in candidates if _sid(s) not in tried] or list(candidates)
        view = self.view(key)
        return win_probabilities({_sid(s): view.belief(_sid(s)) for s in fresh})

    def start_probabilities(
        self, key: str, strategies: Sequence[RecoveryStrategy], max_level: int
    ) -> dict[tuple[str, int], float]:
        """The probability of each (first strategy, start level) of a group's first recovery,
        summing to 1 (empty when no strategy can run below level 5)."""
        options, levels = self.first_options(key, strategies, max_level)
        if (seeded := self.seed_first(key, list(options))) is not None:
            return {(seeded[0], levels[seeded[0]]): 1.0}
        return {(sid, levels[sid]): p for sid, p in win_probabilities(options).items()}

    # -- the first strategy of a new group ---------------------------------------------------------
    def first_options(
        self, key: str, strategies: Sequence[RecoveryStrategy], max_level: int
    ) -> tuple[dict[str, Belief], dict[str, int]]:
        """Every strategy that can run below level 5, valued as the first run of a recovery."""
        return plan_first(self.view(key), strategies, max_level)

    def start(self, key: str, strategies: Sequence[RecoveryStrategy], max_level: int) -> StartChoice:
        options, levels = self.first_options(key, strategies, max_level)
        if not options:
            return StartChoice(1, "no strategy can run below level 5: start at level 1")
        if (seeded := self.seed_first(key, list(options))) is not None:
            sid, level = seeded[0], levels[seeded[0]]
            reason = "first of a new group: " + _SEED_REASON.format(score=seeded[1])
            return StartChoice(level, f"start at level {level} with {sid} (the seed's first choice)",
                               Decision(sid, level, self.name, reason, 1.0, {sid: seeded[1]}))
        draws = self._draw(options)
        best = max(draws, key=lambda k: draws[k])
        level = levels[best]
        prob = choice_probability(options, best) if len(options) > 1 else 1.0
        reason = f"first of a new group: Thompson value {draws[best]:.3f} highest of {len(options)}; " + _evidence(
            options[best]
        )
        skipped = list(range(1, level))
        start_reason = f"start at level {level} with {best}" + (
            f"; levels {skipped} skipped" if skipped else ""
        ) + f" (chosen with probability {prob:.2f} among every strategy below level 5)"
        return StartChoice(level, start_reason, Decision(best, level, self.name, reason, prob, draws))

    def first_choices(self, key: str, strategies: Sequence[RecoveryStrategy], max_level: int) -> list[dict[str, Any]]:
        """For explanations: each option's level and its probability of being chosen first now."""
        options, levels = self.first_options(key, strategies, max_level)
        if (seeded := self.seed_first(key, list(options))) is not None:
            return [{"strategy_id": sid, "level": levels[sid], "probability": 1.0 if sid == seeded[0] else 0.0,
                     **({"seed_score": seeded[1]} if sid == seeded[0] else {})}
                    for sid in sorted(options, key=lambda k: k != seeded[0])]
        rows = [
            {"strategy_id": sid, "level": levels[sid], "probability": round(choice_probability(options, sid), 3)}
            for sid in options
        ]
        return sorted(rows, key=lambda r: -r["probability"])

    def load(self, rows: list[LearnerRecord]) -> None:
        """Learner rows of earlier versions (learned start levels) are superseded: the start now
        follows from the strategies' evidence, which is restored with the strategy scores. The
        seed's first choices are read (see ``SelectionPolicy.load``)."""
        super().load(rows)

    def key_summary(self, key: str) -> dict[str, Any]:
        view = self.view(key)
        shifts = [
            {"strategy_id": sid, "runs_ago": view.clock - arm.evidence.changed_at, "detected": arm.evidence.changes}
            for sid, arm in view.arms.items()
            if arm.evidence.changes
        ]
        return {"runs": view.clock, "prior_success_rate": round(view.prior_mean, 4), "shifts_detected": shifts}


_SEED_REASON = ("the seed's top-scored strategy (seed score {score:.3f}), kept after the migration until this "
                "plugin's own runs of it fail")


def _evidence(o: Belief) -> str:
    if o.runs < 0.05:
        return "no recent evidence: exploring"
    return f"{o.successes:.1f} of {o.runs:.1f} recent runs succeeded (discounted)"


def make_policy(
    name: str,
    perf: PerformanceTracker,
    rng: random.Random,
    persist: Callable[[LearnerRecord], Any] | None = None,
) -> SelectionPolicy:
    """The named policy. ``persist`` (a store's ``save_learner_state``) is accepted for policies
    with state of their own; the
    built-in ones keep everything they learn in ``perf``, which is persisted with the scores."""
    if name == "ladder":
        return LadderPolicy(perf, rng)
    if name == "score":
        return ScorePolicy(perf, rng)
    if name == "adaptive":
        return AdaptivePolicy(perf, rng)
    raise ValueError(f"selection: unknown policy {name!r}; accepted: adaptive, score, ladder")
