"""The off-policy estimators over weighted incidents (``offpolicy.weigh`` makes them): IPS,
self-normalized IPS (per decision for runs per incident) and doubly robust, with percentile
bootstrap intervals, effective sample sizes, support, and the verdict."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MIN_ESS = 10.0  # below this many effective incidents an estimate is not supported
MAX_UNSUPPORTED = 0.05  # target mass on first choices the logger never made, above which it is not
MAX_MISMATCH = 0.1  # share of recomputed logged probabilities that may differ from the log


@dataclass(slots=True)
class Weighted:
    """One incident under one target: its ratios, outcomes and the model's values."""

    w1: float  # target / logged probability of the first choice
    w: float  # the product over every choice of the incident
    cum: tuple[float, ...]  # the products over its first 1, 2, ... choices (per-decision weights)
    first_success: float
    runs: float
    dm_first: float  # model: first-try success under the target's first-choice distribution
    q_first: float  # model: success of the logged first choice
    dm_runs: float
    q_runs: float
    unsupported: float  # target mass on first choices the logger never made for this error type
    rare: float  # ... made fewer than RARE times


# -- the estimators -------------------------------------------------------------------------------
METRICS = ("first_try_success", "runs_per_incident")


def _point(units: Sequence[Weighted], metric: str) -> dict[str, float | None]:
    n = len(units)
    if metric == "first_try_success":
        ws, ys, dm, qa = ([u.w1 for u in units], [u.first_success for u in units], [u.dm_first for u in units],
                          [u.q_first for u in units])
    else:
        ws, ys, dm, qa = ([u.w for u in units], [u.runs for u in units], [u.dm_runs for u in units],
                          [u.q_runs for u in units])
    dr = sum(d + w * (y - m) for d, w, y, m in zip(dm, ws, ys, qa, strict=True)) / n
    if metric == "runs_per_incident":
        return {"ips": sum(sum(u.cum) for u in units) / n, "snips": _per_decision(units), "dr": dr}
    total = sum(ws)
    wy = sum(w * y for w, y in zip(ws, ys, strict=True))
    return {"ips": wy / n, "snips": wy / total if total > 0 else None, "dr": dr}


def _per_decision(units: Sequence[Weighted]) -> float | None:
    """Runs per recovery as the sum over t of the chance that a t-th run happens, each
    self-normalized by its own weights (those of the first t choices; a recovery that ended
    before keeps its last): weighted per-decision importance sampling."""
    total = 0.0
    for t in range(max(len(u.cum) for u in units)):
        den = sum(u.cum[min(t, len(u.cum) - 1)] for u in units)
        if den <= 0:
            return None if t == 0 else total
        total += sum(u.cum[t] for u in units if t < len(u.cum)) / den
    return total


def ess(ws: Sequence[float]) -> float:
    """Kish's effective sample size of the weights."""
    sq = sum(w * w for w in ws)
    return (sum(ws) ** 2) / sq if sq > 0 else 0.0


def estimate(units: Sequence[Weighted], resamples: int = 400, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """IPS, SNIPS and DR of each metric with percentile bootstrap intervals, the effective sample
    sizes, the support, and the problems that make an estimate unsupported."""
    n = len(units)
    if n == 0:
        return {"incidents": 0, "supported": False, "problems": ["no incident to evaluate"], "estimates": {}}
    rng = random.Random(seed)
    points = {m: _point(units, m) for m in METRICS}
    boots: dict[tuple[str, str], list[float]] = {}
    for _ in range(resamples):
        sample = [units[rng.randrange(n)] for _ in range(n)]
        for m in METRICS:
            for est, v in _point(sample, m).items():
                if v is not None:
                    boots.setdefault((m, est), []).append(v)
    tail = (1.0 - level) / 2.0
    estimates: dict[str, dict[str, Any]] = {}
    for m in METRICS:
        estimates[m] = {}
        for est, v in points[m].items():
            xs = sorted(boots.get((m, est), []))
            ci = [xs[int(tail * (len(xs) - 1))], xs[int((1.0 - tail) * (len(xs) - 1))]] if xs else None
            estimates[m][est] = {"value": v, "interval": ci}
    ess_first, ess_runs = ess([u.w1 for u in units]), ess([u.w for u in units])
    unsupported = sum(u.unsupported for u in units) / n
    rare = sum(u.rare for u in units) / n
    problems = []
    if unsupported > MAX_UNSUPPORTED:
        problems.append(f"the target's first choice is one the log never made in {unsupported:.0%} of incidents "
                        "(no weight can stand for it: IPS and SNIPS leave it out, DR has only its model there)")
    if ess_first < MIN_ESS:
        problems.append(f"effective sample size of the first choices {ess_first:.1f} < {MIN_ESS:g}")
    if ess_runs < MIN_ESS:
        problems.append(f"effective sample size of whole recoveries {ess_runs:.1f} < {MIN_ESS:g} "
                        "(runs per incident cannot be estimated)")
    return {
        "incidents": n, "supported": not problems, "problems": problems, "estimates": estimates,
        "effective_sample_size": {"first_choice": round(ess_first, 2), "whole_recovery": round(ess_runs, 2)},
        "support": {"never_tried": round(unsupported, 4), "rarely_tried": round(rare, 4)},
        "agreement": round(sum(1 for u in units if u.w1 > 0) / n, 4),
    }


