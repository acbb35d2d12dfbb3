"""Issue 31 (evaluate): off-policy estimates of the selection policies from the runs the plugin
logged with their choice probabilities."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from coordinator_plugins.error_handling import RecoveryLevel
from coordinator_plugins.error_handling.learning.offpolicy import evaluate_runs
from coordinator_plugins.error_handling.storage.records import StrategyRun
from coordinator_plugins.evaluate import evaluate_databases
from tests.simulate import SyntheticStrategy, simulate_farm

L, M = RecoveryLevel.LOW, RecoveryLevel.MEDIUM


def catalogue(levels: dict[str, RecoveryLevel]) -> list[SyntheticStrategy]:
    """The farm's strategies in registration order, as the evaluator is told them."""
    out = []
    for sid, lv in levels.items():
        s = SyntheticStrategy(sid, lv, lambda et, s: 0.0, random.Random(0))
        s.strategy_id = sid  # (add_custom_strategy names them so)
        out.append(s)
    return out


def run(n: int, sid: str, level: int, success: bool, prob: float, policy: str = "uniform") -> StrategyRun:
    decision = {"strategy_id": sid, "level": level, "policy": policy, "reason": "test", "probability": prob}
    return StrategyRun(strategy_id=sid, strategy_name=sid, error_type="network", execution_time=0.01,
                       success=success, error_id=f"g{n}", level=level,
                       context={"category": "connection", "decision": decision})


def uniform_log(n: int, truth: dict[str, float], seed: int) -> list[StrategyRun]:
    """Recoveries of a logger that picks a or b at level 1 with probability 1/2 each and, when it
    fails, runs the other at level 2 (its only fresh candidate: probability 1)."""
    rng = random.Random(seed)
    runs = []
    for i in range(n):
        first = rng.choice("ab")
        ok = rng.random() < truth[first]
        runs.append(run(i, first, 1, ok, 0.5))
        if not ok:
            other = "b" if first == "a" else "a"
            runs.append(run(i, other, 2, rng.random() < truth[other], 1.0))
    return runs


def test_the_estimators_on_a_hand_sized_log_are_the_formulas() -> None:
    # four recoveries of a uniform logger; the ladder runs a first, then b
    runs = [run(0, "a", 1, True, 0.5), run(1, "b", 1, True, 0.5),
            run(2, "a", 1, False, 0.5), run(2, "b", 2, True, 1.0),
            run(3, "b", 1, False, 0.5), run(3, "a", 2, False, 1.0)]
    report = evaluate_runs(runs, catalogue({"a": L, "b": L}), ["ladder"], resamples=50)
    assert report["incidents"] == 4 and report["measured"]["runs_per_incident"] == 6 / 4
    est = report["targets"]["ladder"]["estimates"]
    # weights: 2 for a recovery the ladder would have run (a first, then b), 0 otherwise
    assert est["first_try_success"]["ips"]["value"] == (2 * 1 + 0 + 2 * 0 + 0) / 4
    assert est["first_try_success"]["snips"]["value"] == 2 / 4
    assert est["runs_per_incident"]["ips"]["value"] == (2 * 1 + 2 * 2) / 4
    assert est["runs_per_incident"]["snips"]["value"] == (2 * 1 + 2 * 2) / 4
    # DR: the model's first-try success of a (2 of its 4 runs succeeded, Laplace: 3/6) plus the
    # weighted residuals of the recoveries that started with a
    q_a = 3 / 6
    dr = (4 * q_a + 2 * (1 - q_a) + 2 * (0 - q_a)) / 4
    assert abs(est["first_try_success"]["dr"]["value"] - dr) < 1e-12
    assert report["targets"]["ladder"]["effective_sample_size"]["first_choice"] == 2.0


def test_against_a_known_logging_policy_the_truth_is_inside_the_interval() -> None:
    """The ladder runs a, then b: first-try success is P(a) and runs per recovery 2 - P(a),
    exactly; the log is a uniform logger's."""
    truth = {"a": 0.3, "b": 0.8}
    hits = {("first_try_success", e): 0 for e in ("ips", "snips", "dr")}
    hits |= {("runs_per_incident", e): 0 for e in ("ips", "snips", "dr")}
    for seed in range(10):
        report = evaluate_runs(uniform_log(400, truth, seed), catalogue({"a": L, "b": L}), ["ladder"],
                               resamples=200, seed=seed)
        target = report["targets"]["ladder"]
        assert target["supported"], target["problems"]
        for (metric, e) in hits:
            lo, hi = target["estimates"][metric][e]["interval"]
            exact = truth["a"] if metric == "first_try_success" else 2 - truth["a"]
            hits[(metric, e)] += lo <= exact <= hi
    assert all(h >= 9 for h in hits.values()), hits


def test_a_log_without_support_says_so() -> None:
    """The logger only ever ran b first: the ladder's first choice (a) has no support."""
    runs = [run(i, "b", 1, i % 2 == 0, 1.0, policy="ladder") for i in range(50)]
    report = evaluate_runs(runs, catalogue({"a": L, "b": L}), ["ladder", "adaptive"], resamples=20)
    ladder = report["targets"]["ladder"]
    assert not ladder["supported"]
    assert ladder["support"]["never_tried"] == 1.0
    assert ladder["first_choices"] == [{"error_type": "network", "strategy_id": "a", "target_share": 1.0,
                                        "logged_first": 0}]
    assert any("never made" in p for p in ladder["problems"])
    assert any("effective sample size" in p for p in ladder["problems"])
    assert ladder["estimates"]["first_try_success"]["ips"]["value"] == 0.0


# -- on the simulator: the plugin itself, with a uniform logging policy ------------------------------
WORLD = {"a": (0.3, L), "b": (0.7, L), "m": (0.5, M)}


async def farm(db: Path, selection: str, seed: int, n: int,
               world: dict[str, tuple[float, RecoveryLevel]] = WORLD) -> tuple[float, float]:
    return await simulate_farm(db, selection, seed, n, world)


def test_on_the_simulator_the_estimate_of_a_policy_not_run_covers_its_measured_value(tmp_path: Path) -> None:
    """Ten seeds: the plugin runs 150 recoveries with a uniform logger into a DuckDB file, and
    150 with the ladder into another; the ladder's estimate from the first file (every
    estimator, both metrics) holds the ladder's measured value in at least 9 of 10 seeds."""
    strategies = catalogue({sid: lv for sid, (_, lv) in WORLD.items()})
    logs, measured = [], []
    for seed in range(10):
        logs.append(str(tmp_path / f"uniform{seed}.duckdb"))
        asyncio.run(farm(tmp_path / f"uniform{seed}.duckdb", "uniform", seed, 150))
        measured.append(asyncio.run(farm(tmp_path / f"ladder{seed}.duckdb", "ladder", seed + 1000, 150)))
    reports = evaluate_databases(logs, ["ladder"], strategies=strategies, resamples=200)
    hits: dict[tuple[str, str], int] = {}
    for report, (first, runs) in zip(reports, measured, strict=True):
        assert report["logged_policies"] == {"uniform": report["runs"]}
        target = report["targets"]["ladder"]
        for metric, value in (("first_try_success", first), ("runs_per_incident", runs)):
            for e in ("ips", "snips", "dr"):
                lo, hi = target["estimates"][metric][e]["interval"]
                hits[(metric, e)] = hits.get((metric, e), 0) + (lo <= value <= hi)
    assert all(h >= 9 for h in hits.values()), (hits, measured)


def test_the_policy_that_ran_is_estimated_at_its_measured_value(tmp_path: Path) -> None:
    """Adaptive logs, adaptive evaluated: every weight is 1 when the replayed learner state is the
    logger's and the logger's probabilities are recomputed on it as the target's are (taken as
    logged, the normal approximation's, which sum to less than 1 over four options, IPS came out
    30% high)."""
    world = {"a": (0.3, L), "b": (0.6, L), "m": (0.8, M), "n": (0.5, M)}
    first, runs = asyncio.run(farm(tmp_path / "adaptive.duckdb", "adaptive", 1, 150, world))
    strategies = catalogue({sid: lv for sid, (_, lv) in world.items()})
    (report,) = evaluate_databases([str(tmp_path / "adaptive.duckdb")], ["adaptive"], strategies=strategies,
                                   resamples=50)
    assert report["measured"] == {"first_try_success": first, "runs_per_incident": runs}
    est = report["targets"]["adaptive"]["estimates"]
    assert abs(est["first_try_success"]["ips"]["value"] - first) < 0.01, (est, first)
    assert abs(est["runs_per_incident"]["ips"]["value"] - runs) < 0.02, (est, runs)
    assert report["targets"]["adaptive"]["effective_sample_size"]["first_choice"] > 149


def test_the_adaptive_policys_probabilities_are_those_of_its_draws() -> None:
    """What the evaluator asks of the adaptive policy is the chance of each candidate winning its
    Thompson draw, tails included: the normal approximation that decisions log puts an option
    that wins one draw in 600 at 3e-7, which would weigh its runs 5000 times too much."""
    from coordinator_plugins.error_handling.learning.belief import Belief, choice_probability
    from coordinator_plugins.error_handling.learning.policy import AdaptivePolicy
    from coordinator_plugins.error_handling.learning.thompson import beta_cdf

    assert beta_cdf(0.5, 2.0, 2.0) == 0.5 and abs(beta_cdf(0.3, 1.0, 1.0) - 0.3) < 1e-12
    assert abs(beta_cdf(0.25, 2.0, 1.0) - 0.0625) < 1e-12 and abs(beta_cdf(0.81, 0.5, 1.0) - 0.9) < 1e-12
    options = {"a": Belief(0.6, 6.0, 0.3, 0.45), "b": Belief(12.0, 8.0, 0.3, 0.45), "m": Belief(9.0, 3.0, 0.25, 0.4)}

    class Fixed(AdaptivePolicy):
        def view(self, key: str) -> Any:
            return type("View", (), {"belief": staticmethod(options.__getitem__)})()

    policy = Fixed(None, random.Random(0))  # type: ignore[arg-type]
    probs = policy.probabilities(catalogue({"a": L, "b": L, "m": L}), "network", 1, set())
    rng, n = random.Random(1), 100_000
    wins = dict.fromkeys(options, 0)
    for _ in range(n):
        draws = {sid: o.base + o.weight * rng.betavariate(o.a, o.b) for sid, o in options.items()}
        wins[max(draws, key=lambda k: draws[k])] += 1
    for sid, won in wins.items():
        p = won / n
        assert abs(probs[sid] - p) < 4 * (p * (1 - p) / n) ** 0.5 + 1e-4, (sid, probs[sid], p)
    assert choice_probability(options, "a") < 1e-5 < 1e-3 < probs["a"]  # what the decision logs
