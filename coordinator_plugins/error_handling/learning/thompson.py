"""The exact probability of each option winning a Thompson draw, for off-policy evaluation.

Each option's value is ``base + weight * p`` with ``p ~ Beta(a, b)`` (``belief.Belief``). The
probability that option i has the highest value is the integral of ``dF_i(v) * prod_j F_j(v)``
over the values v (j != i), with ``F`` the value's distribution function: here a Stieltjes sum on
a grid of the value axis, so the Beta densities' poles at 0 and 1 (shape below 1) cost nothing.
``belief.choice_probability`` (a normal approximation, cheap enough for every decision) gets the
tails wrong: an option with a 1% chance can come out at 0.0001, and a weight of 1/propensity
100 times too large.
"""

from __future__ import annotations

import math

from coordinator_plugins.error_handling.learning.belief import Belief

GRID = 400


def beta_cdf(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by its continued fraction."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _fraction(x, a, b) / a
    return 1.0 - math.exp(log_front) * _fraction(1.0 - x, b, a) / b


def _fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz), converging for x < (a+1)/(a+b+2)."""
    tiny, eps = 1e-300, 1e-12
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def win_probabilities(options: dict[str, Belief], grid: int = GRID) -> dict[str, float]:
    """Each option's probability of the highest draw, summing to 1."""
    if len(options) == 1:
        return dict.fromkeys(options, 1.0)
    lo = min(o.base + min(o.weight, 0.0) for o in options.values())
    hi = max(o.base + max(o.weight, 0.0) for o in options.values())
    if hi - lo < 1e-12:
        return dict.fromkeys(options, 1.0 / len(options))
    values = [lo + (hi - lo) * k / grid for k in range(grid + 1)]
    cdfs = {sid: [_value_cdf(o, v) for v in values] for sid, o in options.items()}
    raw = {}
    for sid, cdf in cdfs.items():
        others = [c for k, c in cdfs.items() if k != sid]
        total = 0.0
        for m in range(grid):
            mass = cdf[m + 1] - cdf[m]
            if mass > 0.0:
                below = 1.0
                for c in others:
                    below *= 0.5 * (c[m] + c[m + 1])
                total += mass * below
        raw[sid] = total
    s = sum(raw.values())
    return {sid: p / s for sid, p in raw.items()} if s > 0 else dict.fromkeys(options, 1.0 / len(options))


def _value_cdf(o: Belief, v: float) -> float:
    if abs(o.weight) < 1e-12:
        return 1.0 if v >= o.base else 0.0
    p = (v - o.base) / o.weight
    return beta_cdf(p, o.a, o.b) if o.weight > 0 else 1.0 - beta_cdf(p, o.a, o.b)
