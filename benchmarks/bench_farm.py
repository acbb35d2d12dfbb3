"""Does recovery pay on a real farm, and does learning beat a fixed order there? (issue 31)

The reference coordinator with real worker processes, a seeded task stream and a seeded fault
schedule, run once per policy (``off`` = no plugin, ``ladder``, ``adaptive``; ``--score`` adds
``score``), one after another, each on a fresh database: ``demo --compare`` without the printing.
Two fault mixes:

- ``worker``: SIGKILL or SIGSTOP a worker (``kill,hang``): one strategy fixes each, a restart;
- ``costly``: a worker whose local state is wedged (``rehang``): a restart, the cheaper action
  and the ladder's first choice, leaves it hanging again; only a replacement (the opt-in
  ``replace`` strategy) fixes it.

For each mix, each policy's medians over the seeds, and the medians of the per-seed ratios to
``off`` and to ``ladder`` (each ratio from one seed's runs, made one after another).
Goals: with the plugin, mean time in system <= 0.1x off and no more tasks lost; on ``costly``,
adaptive <= 0.8x ladder's time in system and strategy runs; on ``worker``, adaptive <= 1.05x.

Run: python benchmarks/bench_farm.py [--seeds 5] [--duration 15] [--workers 4] [--task-rate 6]
     [--fault-rate 0.3] [--mix worker,costly] [--score]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coordinator_plugins.demo.compare import PolicyRun
from coordinator_plugins.demo.compare_report import ratio
from coordinator_plugins.demo.live import LiveView

MIXES = {"worker": ["kill", "hang"], "costly": ["rehang"]}
METRICS = ("tis_mean", "tis_p95", "makespan", "lost", "strategy_runs", "worker_restarts")


def med(xs: list[float | None]) -> float | None:
    known = [x for x in xs if x is not None]
    return statistics.median(known) if known else None


def fmt(v: float | None, unit: str = "") -> str:
    return "n/a" if v is None else f"{v:.2f}{unit}"


async def one(policy: str, mix: str, seed: int, a: argparse.Namespace, where: Path) -> dict[str, Any]:
    args = argparse.Namespace(workers=a.workers, duration=a.duration, task_rate=a.task_rate,
                              fault_rate=a.fault_rate, faults=MIXES[mix], seed=seed)
    return await PolicyRun(policy, args, where / f"{mix}-{seed}" / policy, LiveView(io.StringIO())).run()


def report(mix: str, policies: list[str], runs: dict[tuple[str, int], dict[str, Any]], seeds: list[int]) -> bool:
    print(f"\nmix {mix} ({','.join(MIXES[mix])}): medians over {len(seeds)} seeds")
    print(f"  {'policy':<9}{'tis mean':>10}{'tis p95':>10}{'makespan':>10}{'lost':>6}{'runs':>6}{'restarts':>9}"
          f"{'tis/off':>9}{'tis/ladder':>11}{'runs/ladder':>12}")
    ok = True
    for p in policies:
        m = {k: med([runs[p, s][k] for s in seeds]) for k in METRICS}
        to_off = med([ratio(runs[p, s]["tis_mean"], runs["off", s]["tis_mean"]) for s in seeds]) \
            if "off" in policies and p != "off" else None
        to_lad = med([ratio(runs[p, s]["tis_mean"], runs["ladder", s]["tis_mean"]) for s in seeds]) \
            if "ladder" in policies and p != "ladder" else None
        runs_lad = med([ratio(runs[p, s]["strategy_runs"], runs["ladder", s]["strategy_runs"]) for s in seeds]) \
            if "ladder" in policies and p not in ("ladder", "off") else None
        print(f"  {p:<9}{fmt(m['tis_mean'], ' s'):>10}{fmt(m['tis_p95'], ' s'):>10}{fmt(m['makespan'], ' s'):>10}"
              f"{fmt(m['lost']):>6}{fmt(m['strategy_runs']):>6}{fmt(m['worker_restarts']):>9}"
              f"{fmt(to_off, 'x'):>9}{fmt(to_lad, 'x'):>11}{fmt(runs_lad, 'x'):>12}")
        if p != "off" and to_off is not None:
            more_lost = [s for s in seeds if runs[p, s]["lost"] > runs["off", s]["lost"]]
            met = to_off <= 0.1 and not more_lost
            # the goal is the plugin's as users enable it (adaptive, the default); the ladder on the
            # costly mix is the fixed order paying for itself there, shown, not a goal
            goal = not (p == "ladder" and mix == "costly")
            ok &= met or not goal
            lost = f"more lost in seeds {more_lost}" if more_lost else "none more lost"
            print(f"    {'goal' if goal else 'shown, no goal:'} {p} mean time in system <= 0.1x off, no more "
                  f"tasks lost: {fmt(to_off, 'x')}, {lost}: {'met' if met else 'NOT met'}")
        if p == "adaptive" and to_lad is not None:
            bound = 0.8 if mix == "costly" else 1.05
            met = to_lad <= bound and (runs_lad is None or runs_lad <= bound)
            ok &= met
            print(f"    goal adaptive <= {bound}x ladder (time in system {fmt(to_lad, 'x')}, strategy runs "
                  f"{fmt(runs_lad, 'x')}): {'met' if met else 'NOT met'}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--task-rate", type=float, default=6.0)
    ap.add_argument("--fault-rate", type=float, default=0.3)
    ap.add_argument("--mix", default="worker,costly")
    ap.add_argument("--score", action="store_true", help="also run selection = score")
    a = ap.parse_args()
    mixes = [m for m in a.mix.split(",") if m]
    policies = ["off", "ladder", *(["score"] if a.score else []), "adaptive"]
    seeds = list(range(a.first_seed, a.first_seed + a.seeds))
    print(f"bench_farm: {a.workers} workers, {a.task_rate:g} tasks/s for {a.duration:g} s, faults at "
          f"{a.fault_rate:g}/s in the first 70%, seeds {seeds[0]}..{seeds[-1]}, policies {', '.join(policies)}")
    ok = True
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-farm-") as tmp:
        for mix in mixes:
            runs: dict[tuple[str, int], dict[str, Any]] = {}
            for s in seeds:
                for p in policies:
                    runs[p, s] = asyncio.run(one(p, mix, s, a, Path(tmp)))
                    r = runs[p, s]
                    print(f"  {mix} seed {s} {p:<8} tis {fmt(r['tis_mean'], ' s')} lost {r['lost']} runs "
                          f"{r['strategy_runs']} restarts {r['worker_restarts']}", flush=True)
            ok &= report(mix, policies, runs, seeds)
    print(f"\nbench_farm: {time.monotonic() - started:.0f} s wall; {'every goal met' if ok else 'a goal NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
