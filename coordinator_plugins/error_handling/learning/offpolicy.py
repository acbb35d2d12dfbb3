"""Off-policy evaluation: what another selection policy would have achieved, from the runs the
plugin logged with their choice probabilities (``context.decision`` of each stored run).

An incident is one recovery: a group's runs in log order, a new one starting after a success or
when the level does not rise (within a recovery each level runs one strategy). Per incident the
estimands are first-try success (the first run succeeded) and strategy runs until it ended.

The target policy's probability of each logged choice is computed by the policy's own code
(``SelectionPolicy.probabilities``, ``AdaptivePolicy.start_probabilities``) on the learner state
replayed from the log: every earlier run is fed to a fresh ``PerformanceTracker`` in log order,
so the target is evaluated as its decision rule given what the farm knew at each decision (not as
a learner that would have seen its own choices' outcomes). The adaptive logger's propensities are
recomputed on the same replay, exactly (``thompson``): what its decisions log is a normal
approximation that gets small probabilities wrong by orders of magnitude; the logged value is
still checked against the replay's, and a replay that does not reproduce it is reported.
Approximations, stated in the report:
the candidates are the catalogue's strategies for the error's category at the level (the log
does not say which were not applicable), and runs learned late (verify window, held task runs)
are replayed where they were stored.

Estimators, each with a percentile bootstrap interval over incidents:
- IPS: mean of w * y; SNIPS: sum(w * y) / sum(w). First-try success weighs by the first choice's
  ratio. Runs per incident is a sum over t of "a t-th run happened", each weighted by the product
  of the ratios of the first t choices (per-decision importance sampling), self-normalized per t
  for SNIPS;
- DR: the model's value under the target plus w * (y - model(first choice)), unbiased whatever
  the model when the weights are right; for runs per incident w is the product of the ratios of
  every choice of the incident.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coordinator_plugins.error_handling.learning.belief import choice_probability
from coordinator_plugins.error_handling.learning.estimators import MAX_MISMATCH, Weighted, estimate
from coordinator_plugins.error_handling.learning.performance import PerformanceTracker, Sample
from coordinator_plugins.error_handling.learning.policy import AdaptivePolicy, SelectionPolicy, make_policy
from coordinator_plugins.error_handling.storage.records import StrategyRun
from coordinator_plugins.error_handling.strategies.base import LEVEL_STRATEGIES, RecoveryStrategy

POLICIES = ("ladder", "score", "adaptive")
RARE = 5  # first choices the logger made fewer times than this are "rarely tried"
Action = tuple[str, int]  # (strategy id, level)
START_REASON = "first of a new group"  # the reason of the adaptive policy's start draws begins so


@dataclass(slots=True)
class Step:
    index: int  # the run's position in the log, oldest first
    strategy_id: str
    level: int
    success: bool
    propensity: float | None  # the logged choice probability (None: the run logged no decision)
    policy: str
    start: bool = False  # logged as the adaptive start draw of a group (its reason says so)


@dataclass(slots=True)
class Incident:
    error_id: str
    error_type: str
    category: str | None
    first_recovery: bool  # the group's first recovery in the log (started by the policy's start)
    steps: list[Step] = field(default_factory=list)


def _sample(run: StrategyRun) -> Sample:
    return Sample(run.success, run.execution_time, run.impact_score, run.stability_score, run.affected_tasks,
                  run.recovered_tasks)


def incidents_of(runs: Sequence[StrategyRun]) -> tuple[list[Incident], dict[str, int]]:
    """The recoveries of ``runs`` (oldest first), and counts of runs left out and why."""
    incidents: list[Incident] = []
    current: dict[str, Incident] = {}
    seen: set[str] = set()
    left = {"runs_without_group": 0}
    for i, run in enumerate(runs):
        if not run.error_id:
            left["runs_without_group"] += 1
            continue
        decision = run.context.get("decision") if isinstance(run.context, Mapping) else None
        decision = decision if isinstance(decision, Mapping) else {}
        prob = decision.get("probability")
        step = Step(i, run.strategy_id, run.level, run.success,
                    float(prob) if isinstance(prob, int | float) else None, str(decision.get("policy") or "?"),
                    str(decision.get("reason") or "").startswith(START_REASON))
        inc = current.get(run.error_id)
        if inc is None or inc.steps[-1].success or run.level <= inc.steps[-1].level:
            category = run.context.get("category") if isinstance(run.context, Mapping) else None
            inc = current[run.error_id] = Incident(run.error_id, run.error_type,
                                                   str(category) if category else None, run.error_id not in seen)
            seen.add(run.error_id)
            incidents.append(inc)
        inc.steps.append(step)
    return incidents, left


def _keys(perf: PerformanceTracker, run: StrategyRun) -> tuple[str, list[str]]:
    """The choice key and the record keys of a run, as the recovery manager forms them."""
    et, hw = run.error_type, run.hardware_id
    if not hw:
        return et, [et]
    hk = f"{et}@{hw}"
    rich = any(a.n >= 3 for a in perf.by_key.get(hk, {}).values())
    return (hk if rich else et), [et, hk]


def _at_level(strategies: Sequence[RecoveryStrategy], level: int) -> list[RecoveryStrategy]:
    return [s for s in strategies if s.level in LEVEL_STRATEGIES[level]]


def first_distribution(policy: SelectionPolicy, key: str, strategies: Sequence[RecoveryStrategy], max_level: int,
                       first_recovery: bool, level: int,
                       registry: Sequence[RecoveryStrategy] | None = None) -> dict[Action, float]:
    """A policy's probability of each (strategy, level) as the incident's first run, among the
    applicable ``strategies``. The adaptive policy starts a group's first recovery with a draw
    among every registered strategy below level 5 (``registry``, applicable or not): a drawn
    strategy that is not applicable leaves the choice to ``probabilities`` at the first level
    from its own on that has applicable candidates, as the recovery manager does."""
    start = getattr(policy, "start_probabilities", None)
    if first_recovery and start is not None:
        ok = {s.strategy_id for s in strategies}
        dist: dict[Action, float] = {}
        for (sid, lv), p in start(key, registry if registry is not None else strategies, max_level).items():
            if sid in ok:
                dist[(sid, lv)] = dist.get((sid, lv), 0.0) + p
                continue
            for (other, at), q in _choose_from(policy, key, strategies, max_level, lv).items():
                dist[(other, at)] = dist.get((other, at), 0.0) + p * q
        return dist
    if first_recovery:
        level = policy.start_level(key, max_level)[0]
    return _choose_from(policy, key, strategies, max_level, level)


def _choose_from(policy: SelectionPolicy, key: str, strategies: Sequence[RecoveryStrategy], max_level: int,
                 level: int) -> dict[Action, float]:
    for lv in range(level, max_level + 1):
        cands = _at_level(strategies, lv)
        if cands:
            return {(sid, lv): p for sid, p in policy.probabilities(cands, key, lv, set()).items()}
    return {}


def _approximate(logger: AdaptivePolicy, key: str, strategies: Sequence[RecoveryStrategy], level: int,
                 tried: set[str], sid: str) -> float:
    """The probability the adaptive policy logs for a choice at a level (``choice_probability``)."""
    fresh = [s for s in _at_level(strategies, level) if s.strategy_id not in tried] or _at_level(strategies, level)
    view = logger.view(key)
    options = {s.strategy_id: view.belief(s.strategy_id) for s in fresh}
    return choice_probability(options, sid) if len(options) > 1 and sid in options else 1.0


def weigh(runs: Sequence[StrategyRun], incidents: Sequence[Incident], target: str,
          strategies: Sequence[RecoveryStrategy], max_level: int = 5,
          registry: Sequence[RecoveryStrategy] | None = None) -> tuple[list[Weighted], dict[str, Any]]:
    """Replay the log into a fresh learner and weigh each incident for ``target``: ``strategies``
    are those that could run (in registration order), ``registry`` every registered one (the
    adaptive start draws among them; default: ``strategies``). Also returns how many adaptive
    choices' logged probabilities were recomputed on the replay, and how many came out different
    (a replay that is not the logger's state: the log was cut, or written with other strategies),
    and the target's first choices: each one's share of incidents and how often the log made it
    first (those it made fewer than ``RARE`` times listed first)."""
    registry = strategies if registry is None else registry
    perf = PerformanceTracker()
    policy = make_policy(target, perf, random.Random(0))
    logger = AdaptivePolicy(perf, random.Random(0))
    at: dict[int, tuple[Incident, int]] = {s.index: (inc, k) for inc in incidents for k, s in enumerate(inc.steps)}
    q, firsts = _models(runs, incidents)
    models: dict[int, tuple[float, float]] = {}  # incident -> (runs under the target, after its first choice)
    ratios: dict[int, list[float]] = {}
    dists: dict[int, dict[Action, float]] = {}
    checks = [0, 0]  # adaptive choices whose logged probability was recomputed; those that differ
    for i, run in enumerate(runs):
        key, record_keys = _keys(perf, run)
        if i in at:
            inc, k = at[i]
            step = inc.steps[k]
            cat = [s for s in strategies if s.applies_to(inc.category)]
            tried = {s.strategy_id for s in inc.steps[:k]}
            action = (step.strategy_id, step.level)
            logged = step.propensity or 0.0
            if k == 0:
                every = [s for s in registry if s.applies_to(inc.category)]
                dist = dists[id(inc)] = first_distribution(policy, key, cat, max_level, inc.first_recovery,
                                                           step.level, every)
                pi = dist.get(action, 0.0)
                ctx = (policy, key, cat, q, inc.error_type, max_level, target == "adaptive")
                models[id(inc)] = (sum(p * _runs_after(ctx, sid, lv) for (sid, lv), p in dist.items()),
                                   _runs_after(ctx, *action))
                if step.policy == "adaptive" and inc.first_recovery:
                    # the run logged the probability of one path to its choice (the start draw,
                    # or a choice after a draw that was not applicable); the propensity is the
                    # sum over every path, recomputed on the replayed state
                    if step.start:
                        options, _ = logger.first_options(key, every, max_level)
                        approx = choice_probability(options, step.strategy_id) if len(options) > 1 else 1.0
                        checks[0] += 1
                        checks[1] += abs(approx - logged) > 0.01 + 0.05 * logged
                    logged = first_distribution(logger, key, cat, max_level, True, step.level, every).get(action, 0.0)
            else:
                pi = policy.probabilities(_at_level(cat, step.level), key, step.level, tried).get(
                    step.strategy_id, 0.0)
            if step.policy == "adaptive" and not (k == 0 and inc.first_recovery):
                # the replay must be the logger's state: what it logged is recomputed, then the
                # exact probability replaces the logged approximation
                approx = _approximate(logger, key, cat, step.level, tried, step.strategy_id)
                checks[0] += 1
                checks[1] += abs(approx - logged) > 0.01 + 0.05 * logged
                logged = logger.probabilities(_at_level(cat, step.level), key, step.level, tried).get(
                    step.strategy_id, 0.0)
            ratios.setdefault(id(inc), []).append(pi / logged if logged > 0 else 0.0)
        perf.add(record_keys, run.strategy_id, _sample(run))
    out = []
    share: dict[tuple[str, str], float] = {}  # the target's first choices, summed over incidents
    for inc in incidents:
        r, dist, et = ratios[id(inc)], dists[id(inc)], inc.error_type
        cum, w = [], 1.0
        for x in r:
            w *= x
            cum.append(w)
        first = inc.steps[0].strategy_id
        made = firsts.get(et, {})
        for (sid, _), p in dist.items():
            share[(et, sid)] = share.get((et, sid), 0.0) + p
        out.append(Weighted(
            w1=r[0], w=w, cum=tuple(cum), first_success=float(inc.steps[0].success), runs=float(len(inc.steps)),
            dm_first=sum(p * q(et, sid) for (sid, _), p in dist.items()), q_first=q(et, first),
            dm_runs=models[id(inc)][0], q_runs=models[id(inc)][1],
            unsupported=sum(p for (sid, _), p in dist.items() if made.get(sid, 0) == 0),
            rare=sum(p for (sid, _), p in dist.items() if 0 < made.get(sid, 0) < RARE),
        ))
    ranked = sorted(((firsts.get(et, {}).get(sid, 0), p, et, sid) for (et, sid), p in share.items() if p > 0),
                    key=lambda c: (c[0] >= RARE, -c[1]))
    choices = [{"error_type": et, "strategy_id": sid, "target_share": round(p / len(incidents), 4), "logged_first": n}
               for n, p, et, sid in ranked]
    return out, {"recomputed": checks[0], "differ": checks[1], "first_choices": choices}


def _models(runs: Sequence[StrategyRun], incidents: Sequence[Incident]) -> tuple[Any, dict[str, dict[str, int]]]:
    """The outcome model of the doubly robust estimator, fitted on the whole log: a strategy's
    success rate per error type (Laplace-smoothed); and the logger's first choices."""
    ok: dict[tuple[str, str], list[int]] = {}
    for run in runs:
        c = ok.setdefault((run.error_type, run.strategy_id), [0, 0])
        c[0] += int(run.success)
        c[1] += 1
    firsts: dict[str, dict[str, int]] = {}
    for inc in incidents:
        sid = inc.steps[0].strategy_id
        firsts.setdefault(inc.error_type, {})[sid] = firsts.get(inc.error_type, {}).get(sid, 0) + 1

    def q(et: str, sid: str) -> float:
        s, n = ok.get((et, sid), (0, 0))
        return (s + 1.0) / (n + 2.0)

    return q, firsts


def _runs_after(ctx: tuple[Any, ...], sid: str, level: int) -> float:
    """The model's expected runs of a recovery whose first run is ``sid`` at ``level``."""
    policy, key, strategies, q, et, max_level, greedy = ctx
    rest = _further_runs(policy, key, strategies, q, et, level + 1, {sid}, max_level, greedy)
    return 1.0 + (1.0 - float(q(et, sid))) * rest


def _further_runs(policy: SelectionPolicy, key: str, strategies: Sequence[RecoveryStrategy], q: Any, et: str,
                  level: int, tried: set[str], max_level: int, greedy: bool) -> float:
    """The model's expected runs from ``level`` on, the target choosing as it would now at each
    level (``greedy``: the strategy the model rates best, standing in for the adaptive policy's
    draws, which cost an integral each) and each run succeeding at its modelled rate."""
    for lv in range(level, max_level + 1):
        cands = _at_level(strategies, lv)
        if cands:
            break
    else:
        return 0.0
    if greedy:
        fresh = [s for s in cands if s.strategy_id not in tried] or cands
        probs = {max(fresh, key=lambda s: q(et, s.strategy_id)).strategy_id: 1.0}
    else:
        probs = policy.probabilities(cands, key, lv, tried)
    return sum(p * (1.0 + (1.0 - q(et, sid)) * _further_runs(policy, key, strategies, q, et, lv + 1, tried | {sid},
                                                              max_level, greedy))
               for sid, p in probs.items())


def evaluate_runs(runs: Sequence[StrategyRun], strategies: Sequence[RecoveryStrategy],
                  targets: Sequence[str] = POLICIES, max_level: int = 5, resamples: int = 400,
                  seed: int = 0, registry: Sequence[RecoveryStrategy] | None = None) -> dict[str, Any]:
    """Off-policy estimates for each of ``targets`` from ``runs`` (oldest first) of a farm whose
    strategies that could run are ``strategies`` (in registration order) among the registered
    ``registry`` (default: the same)."""
    for t in targets:
        if t not in POLICIES:
            raise ValueError(f"policy: unknown policy {t!r}; accepted: {', '.join(POLICIES)}")
    incidents, left = incidents_of(runs)
    usable = [inc for inc in incidents if all(s.propensity is not None and s.propensity > 0 for s in inc.steps)]
    left["incidents_without_logged_probability"] = len(incidents) - len(usable)
    logged: dict[str, int] = {}
    for inc in usable:
        for s in inc.steps:
            logged[s.policy] = logged.get(s.policy, 0) + 1
    n = len(usable)
    measured = {
        "first_try_success": sum(inc.steps[0].success for inc in usable) / n if n else None,
        "runs_per_incident": sum(len(inc.steps) for inc in usable) / n if n else None,
    }
    result: dict[str, Any] = {"runs": len(runs), "incidents": n, "left_out": left, "logged_policies": logged,
                              "measured": measured, "targets": {}}
    for t in targets:
        units, seen = weigh(runs, usable, t, strategies, max_level, registry) if usable else ([], {})
        checked, differ = seen.get("recomputed", 0), seen.get("differ", 0)
        est = result["targets"][t] = estimate(units, resamples, seed)
        est["first_choices"] = seen.get("first_choices", [])
        result["replay_check"] = {"recomputed": checked, "differ": differ}
        if differ > MAX_MISMATCH * checked:
            est["supported"] = False
            est["problems"].append(
                f"the learner state replayed from the log is not the logger's: {differ} of {checked} adaptive "
                "choices logged a probability the replay does not reproduce (read more runs with --limit, or "
                "give the farm's strategies)")
    return result
