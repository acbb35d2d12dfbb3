"""Off-policy evaluation checked on the simulator (issue 31, evaluate).

Per seed: the plugin runs N recoveries of one error type with a logging policy into a DuckDB
file, and N with the ladder into another (a different seed); ``evaluate`` estimates the ladder
from the first file. Printed per logger and estimator: in how many seeds the 95% interval holds
the ladder's measured first-try success and strategy runs per recovery, how many seeds the
verdict called supported, and the median effective sample sizes.

Loggers: ``uniform`` (a custom policy that picks each fresh candidate with equal probability and
logs it) and ``adaptive`` (the plugin's Thompson sampling, which soon stops running the ladder's
first choice, so that its log supports the ladder poorly).
Run: python benchmarks/bench_offpolicy.py [--seeds 10] [--incidents 200] [--logger uniform,adaptive]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coordinator_plugins.error_handling import RecoveryLevel
from coordinator_plugins.evaluate import evaluate_databases
from tests.simulate import SyntheticStrategy, simulate_farm

L, M = RecoveryLevel.LOW, RecoveryLevel.MEDIUM
WORLD = {"a": (0.4, L), "b": (0.5, L), "c": (0.45, L), "m": (0.6, M)}


def strategies(rng: random.Random) -> list[SyntheticStrategy]:
    out = []
    for sid, (_, level) in WORLD.items():
        s = SyntheticStrategy(sid, level, lambda et, k: WORLD[k][0], rng)
        s.strategy_id = sid
        out.append(s)
    return out


async def farm(db: Path, selection: str, seed: int, n: int) -> tuple[float, float]:
    return await simulate_farm(db, selection, seed, n, WORLD)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--incidents", type=int, default=200)
    ap.add_argument("--logger", default="uniform,adaptive")
    args = ap.parse_args()
    catalogue = strategies(random.Random(0))
    for logger in args.logger.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            logs, measured = [], []
            for seed in range(args.seeds):
                logs.append(str(Path(tmp) / f"log{seed}.duckdb"))
                asyncio.run(farm(Path(logs[-1]), logger, seed, args.incidents))
                measured.append(asyncio.run(farm(Path(tmp) / f"ladder{seed}.duckdb", "ladder", seed + 1000,
                                                 args.incidents)))
            reports = evaluate_databases(logs, ["ladder"], strategies=catalogue, resamples=400)
        hits: dict[str, int] = {}
        supported_hits: dict[str, int] = {}
        supported = 0
        ess1, essw = [], []
        for report, (first, runs) in zip(reports, measured, strict=True):
            t = report["targets"]["ladder"]
            supported += t["supported"]
            ess1.append(t["effective_sample_size"]["first_choice"])
            essw.append(t["effective_sample_size"]["whole_recovery"])
            for metric, value in (("first_try_success", first), ("runs_per_incident", runs)):
                for e in ("ips", "snips", "dr"):
                    lo, hi = t["estimates"][metric][e]["interval"]
                    k = f"{metric} {e}"
                    hits[k] = hits.get(k, 0) + (lo <= value <= hi)
                    if t["supported"]:
                        supported_hits[k] = supported_hits.get(k, 0) + (lo <= value <= hi)
        print(f"logger {logger}: {args.seeds} seeds x {args.incidents} recoveries; ladder measured "
              f"first-try {statistics.median(m[0] for m in measured):.3f}, runs "
              f"{statistics.median(m[1] for m in measured):.3f} (medians)")
        print(f"  verdict supported in {supported} of {args.seeds} seeds; median effective sample size "
              f"{statistics.median(ess1):.1f} (first choices), {statistics.median(essw):.1f} (whole recoveries)")
        for k, v in hits.items():
            print(f"  {k:<24} interval holds the measured value in {v}/{args.seeds} seeds"
                  f" ({supported_hits.get(k, 0)}/{supported} of the supported)")


if __name__ == "__main__":
    main()
