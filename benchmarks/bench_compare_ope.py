"""Does ``evaluate`` estimate, from one policy's farm, what another policy measured on the same
farm? (issue 31's check on databases kept from ``demo --compare`` runs)

For each seed: ``coordinator-plugins demo --compare ladder,adaptive`` (the same tasks and fault
schedule for both, each on a fresh database, kept in a temporary directory); then ``evaluate``
estimates ``ladder`` from the adaptive farm's database, and the ladder farm's own database gives
the ladder's measured value (its logged runs, on-policy). Printed per seed and in all: whether the
estimate was supported (support and effective sample size), and, for each estimator and measure,
whether its 95% interval held the measured value.

Run: python benchmarks/bench_compare_ope.py [--seeds 10] [--duration 15] [--faults kill,hang,rehang]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from coordinator_plugins.evaluate import EvaluationError, evaluate_database

MEASURES = ("first_try_success", "runs_per_incident")
ESTIMATORS = ("ips", "snips", "dr")


def run_compare(seed: int, args: argparse.Namespace, where: Path) -> Path:
    cmd = [sys.executable, "-m", "coordinator_plugins", "demo", "--compare", "ladder,adaptive", "--seed", str(seed),
           "--duration", str(args.duration), "--workers", str(args.workers), "--faults", args.faults,
           "--fault-rate", str(args.fault_rate), "--compare-dir", str(where)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration * 20 + 300)
    if done.returncode != 0:
        raise SystemExit(f"seed {seed}: demo --compare exited {done.returncode}: {done.stderr[-2000:]}")
    return where


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--fault-rate", type=float, default=0.3)
    ap.add_argument("--faults", default="kill,hang,rehang")
    a = ap.parse_args()
    started = time.monotonic()
    held = {(m, e): 0 for m in MEASURES for e in ESTIMATORS}
    supported = evaluated = 0
    print(f"bench_compare_ope: seeds {a.first_seed}..{a.first_seed + a.seeds - 1}, {a.duration:g} s, faults {a.faults}")
    with tempfile.TemporaryDirectory(prefix="bench-ope-") as tmp:
        for seed in range(a.first_seed, a.first_seed + a.seeds):
            where = run_compare(seed, a, Path(tmp) / f"s{seed}")
            try:
                measured = evaluate_database(str(where / "ladder" / "errors.duckdb"), ["ladder"])["measured"]
                report = evaluate_database(str(where / "adaptive" / "errors.duckdb"), ["ladder"])
            except EvaluationError as exc:
                print(f"  seed {seed}: cannot evaluate: {exc}")
                continue
            evaluated += 1
            target = report["targets"]["ladder"]
            supported += bool(target["supported"])
            cells = []
            for m in MEASURES:
                for e in ESTIMATORS:
                    got = target["estimates"].get(m, {}).get(e) or {}
                    ci, truth = got.get("interval"), measured.get(m)
                    ok = ci is not None and truth is not None and ci[0] <= truth <= ci[1]
                    held[m, e] += ok
                    cells.append(f"{m[:5]}/{e} {'in' if ok else 'OUT'}")
            print(f"  seed {seed}: {report['incidents']} incidents, ladder measured {measured}, "
                  f"{'supported' if target['supported'] else 'NOT supported: ' + '; '.join(target['problems'])}; "
                  + ", ".join(cells), flush=True)
    print(f"\nsupported in {supported} of {evaluated} evaluated seeds; "
          "the interval held the ladder's measured value in:")
    for m in MEASURES:
        print(f"  {m}: " + ", ".join(f"{e} {held[m, e]} of {evaluated}" for e in ESTIMATORS))
    print(f"bench_compare_ope: {time.monotonic() - started:.0f} s wall")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
