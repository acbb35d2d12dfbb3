"""Selection policies side by side on a seeded simulator (issue 5).

Four error types whose best strategy differs, and for two of them shifts halfway through.
Each incident is a new error group recovered through the real RecoveryManager; strategies
succeed with known probabilities and report a nominal duration (no sleeping), so time to
recovery is the sum of the nominal durations of the strategies run.
Goal: adaptive within 1.25x of the oracle after warm-up, and >= 30% fewer runs than ladder.
Run: python benchmarks/bench_selection.py [--incidents N] [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coordinator_plugins.error_handling import (
    EnhancedErrorHandlingIntegration,
    RecoveryLevel,
    validate_config,
)
from tests.simulate import OraclePolicy, SyntheticStrategy

L, M, H, C = RecoveryLevel.LOW, RecoveryLevel.MEDIUM, RecoveryLevel.HIGH, RecoveryLevel.CRITICAL
# strategy id -> (level, nominal seconds)
STRATEGIES = {"r1": (L, 0.5), "r2": (L, 0.5), "m1": (M, 3.0), "m2": (M, 3.0), "h1": (H, 8.0), "c1": (C, 20.0)}
BEFORE = {
    "network": {"r1": 0.15, "r2": 0.85, "m1": 0.5, "m2": 0.3, "h1": 0.6, "c1": 0.7},
    "timeout": {"r1": 0.8, "r2": 0.3, "m1": 0.4, "m2": 0.4, "h1": 0.5, "c1": 0.6},
    "database": {"r1": 0.0, "r2": 0.02, "m1": 0.05, "m2": 0.05, "h1": 0.9, "c1": 0.95},
    "worker": {"r1": 0.05, "r2": 0.05, "m1": 0.85, "m2": 0.2, "h1": 0.6, "c1": 0.9},
}
AFTER = {  # the shift: what worked stops working
    "network": {**BEFORE["network"], "r2": 0.1, "r1": 0.85},
    "worker": {**BEFORE["worker"], "m1": 0.15, "m2": 0.85},
}


class World:
    def __init__(self) -> None:
        self.phase = BEFORE

    def truth(self, error_type: str, sid: str) -> float:
        table = AFTER if self.phase is AFTER and error_type in AFTER else BEFORE
        return table[error_type][sid]


def tag(n: int) -> str:
    return "".join(chr(97 + (n // 26**k) % 26) for k in range(4))


async def run_policy(policy: str, incidents: int, seed: int) -> dict[str, Any]:
    world = World()
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        integ = EnhancedErrorHandlingIntegration(None, validate_config({
            "database": str(Path(tmp) / "sel.duckdb"), "auto_recover": False, "builtin_strategies": [],
            "escalation_backoff": 0, "regression_window": 0, "recovery_budget": 0, "metrics": False,
            "verify_window": 0,  # a simulation: each success counts at once
            "selection": "ladder" if policy == "oracle" else policy, "seed": seed}))
        for sid, (level, dur) in STRATEGIES.items():
            integ.add_custom_strategy(sid, SyntheticStrategy(sid, level, world.truth, rng, duration=dur))
        if policy == "oracle":
            integ.recovery_manager.policy = OraclePolicy(world.truth, integ.recovery_manager.strategies)
        choose_time: list[float] = []
        chooser = integ.recovery_manager.policy
        original = chooser.choose

        def timed(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            d = original(*a, **kw)
            choose_time.append(time.perf_counter() - t)
            return d

        chooser.choose = timed  # type: ignore[method-assign]
        await integ.start()
        types = list(BEFORE)
        rows = []
        for n in range(incidents):
            if n == incidents // 2:
                world.phase = AFTER
            et = types[rng.randrange(len(types))]
            ok, info = await integ.handle_error(f"incident {tag(n)}", {"component": f"c{n % 7}", "error_type": et})
            ran = [a for a in info["attempts"] if a["outcome"] not in ("not_applicable", "budget_exhausted")]
            ttr = sum(STRATEGIES[a["strategy_id"]][1] for a in ran)
            rows.append((n, ok, len(ran), ttr))
        await integ.stop()
    return {"rows": rows, "choose_us": statistics.median(choose_time) * 1e6 if choose_time else 0.0,
            "choose_mean_us": statistics.fmean(choose_time) * 1e6 if choose_time else 0.0}


def summarize(rows: list[tuple[int, bool, int, float]], warmup: int, half: int) -> dict[str, float]:
    after_warm = [r for r in rows if r[0] >= warmup]
    # the shift at `half` is followed by its own re-learning; the "settled" window excludes it
    settled = [r for r in rows if warmup <= r[0] < half or r[0] >= half + warmup]
    return {
        "runs_all": statistics.fmean(r[2] for r in rows),
        "ttr_all": statistics.fmean(r[3] for r in rows),
        "runs_warm": statistics.fmean(r[2] for r in after_warm),
        "ttr_warm": statistics.fmean(r[3] for r in after_warm),
        "runs_settled": statistics.fmean(r[2] for r in settled),
        "ttr_settled": statistics.fmean(r[3] for r in settled),
        "recovered": sum(r[1] for r in rows) / len(rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--incidents", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    results = {}
    for policy in ("ladder", "score", "adaptive", "oracle"):
        out = asyncio.run(run_policy(policy, args.incidents, args.seed))
        results[policy] = {**summarize(out["rows"], args.warmup, args.incidents // 2), **out}
    print(f"{args.incidents} incidents, 4 error types, best strategy shifts for 2 of them at incident "
          f"{args.incidents // 2}; seed {args.seed}; warm-up {args.warmup} incidents after start and after the shift")
    print(f"{'policy':<9} {'runs/incident':>13} {'runs settled':>12} {'TTR s':>7} {'TTR settled':>11} "
          f"{'recovered':>9} {'choose us':>9}")
    for policy, r in results.items():
        print(f"{policy:<9} {r['runs_all']:>13.2f} {r['runs_settled']:>12.2f} {r['ttr_all']:>7.2f} "
              f"{r['ttr_settled']:>11.2f} {r['recovered']:>9.1%} {r['choose_us']:>9.1f}")
    a, o, lad = results["adaptive"], results["oracle"], results["ladder"]
    print(f"adaptive / oracle, settled: runs {a['runs_settled'] / o['runs_settled']:.2f}x, "
          f"time to recovery {a['ttr_settled'] / o['ttr_settled']:.2f}x")
    print(f"adaptive vs ladder, all incidents: {1 - a['runs_all'] / lad['runs_all']:.0%} fewer strategy runs, "
          f"{1 - a['ttr_all'] / lad['ttr_all']:.0%} less time to recovery")
    print(f"selection overhead (adaptive): median {a['choose_us']:.1f} us, mean {a['choose_mean_us']:.1f} us "
          f"per decision (includes the choice-probability estimate)")


if __name__ == "__main__":
    main()
