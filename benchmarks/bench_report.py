"""report_error throughput, event-loop lag and memory growth (issues 3 and 18).

1. report_error in process over 10,000 groups, without waiting for commit, as a ratio to a
   plain-Python floor measured in the same process (the median of ten floor runs over the same
   messages: normalize, hash, dict update, build a record); goal >= 0.20, with p99 loop lag <= 5 ms.
2. The same with three times more groups than ``max_groups_in_memory`` (round-robin, so every
   occurrence of a group finds it evicted): the counts must be exact (one group per fingerprint,
   every occurrence counted), and the throughput is printed beside the in-memory one.
3. Resident memory growth over 1,000,000 occurrences (goal < 64 MB).
Run: python benchmarks/bench_report.py [--occurrences N] [--groups N] [--memory-occurrences N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration, validate_config


async def lag_probe(samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        samples.append(time.perf_counter() - t - 0.001)


def messages(n_groups: int) -> list[tuple[str, dict[str, str]]]:
    kinds = ["Connection reset by peer at 10.0.{a}.{b}:5432 (attempt {n})",
             "task {n} timed out after {a}.{b}s", "worker w-{a} lost heartbeat {n}",
             "duckdb query failed on table {a}: row {n}"]
    out = []
    for g in range(n_groups):
        tag = "".join(chr(97 + (g // 26**k) % 26) for k in range(3))  # letters: not masked as a number
        out.append((kinds[g % 4] + f" [kind {tag}]", {"component": f"comp{g % 50}", "operation": "op"}))
    return out


_FLOOR_MASK = re.compile(r"\d+")


def floor_run(occurrences: int, groups: int) -> float:
    """A plain-Python floor for the same work: normalize, hash, count in a dict, build a record.
    Occurrences per second."""
    msgs = messages(groups)
    counts: dict[str, int] = {}
    records: list[tuple[object, ...]] = []
    t0 = time.perf_counter()
    for i in range(occurrences):
        tmpl, ctx = msgs[i % groups]
        text = tmpl.format(a=i % 7, b=i % 13, n=i)
        norm = _FLOOR_MASK.sub("<n>", text)
        fp = hashlib.blake2b(f"{ctx['component']}\x1f{norm}".encode(), digest_size=16).hexdigest()
        counts[fp] = counts.get(fp, 0) + 1
        records.append((fp, time.time(), text, ctx["component"]))
    return occurrences / (time.perf_counter() - t0)


async def run(occurrences: int, groups: int, batch: int, cap: int | None = None, concurrent: int = 0
              ) -> dict[str, float]:
    """``concurrent``: report that many occurrences at once (as a server's handlers would), else
    one after the other."""
    with tempfile.TemporaryDirectory() as tmp:
        integ = EnhancedErrorHandlingIntegration(None, validate_config(
            {"database": str(Path(tmp) / "bench.duckdb"), "auto_recover": False, "metrics": True,
             "max_groups_in_memory": cap or max(groups * 2, 100)}))
        await integ.start()
        msgs = messages(groups)
        lag: list[float] = []
        stop = asyncio.Event()
        probe = asyncio.create_task(lag_probe(lag, stop))
        await asyncio.sleep(0.05)
        t0, c0 = time.perf_counter(), time.process_time()
        if concurrent:
            for start in range(0, occurrences, concurrent):
                await asyncio.gather(*(
                    integ.report_error(msgs[i % groups][0].format(a=i % 7, b=i % 13, n=i), msgs[i % groups][1])
                    for i in range(start, min(occurrences, start + concurrent))))
        else:
            for i in range(occurrences):
                tmpl, ctx = msgs[i % groups]
                await integ.report_error(tmpl.format(a=i % 7, b=i % 13, n=i), ctx)
                if i % batch == 0:
                    await asyncio.sleep(0)  # let other tasks run, as a server's handlers would
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        t1 = time.perf_counter()
        await integ.flush()
        flush = time.perf_counter() - t1
        stop.set()
        await probe
        totals = await integ.store.totals()
        stored = (totals.groups, totals.aggregated, integ.error_handler.groups.open_total)  # one group per fingerprint
        lookups = integ.error_handler.stored.lookups
        await integ.stop()
    lag_ms = sorted(x * 1000 for x in lag)
    return {"rate": occurrences / elapsed, "cpu_us": cpu / occurrences * 1e6, "elapsed": elapsed, "flush": flush,
            "groups": stored[0],
            "counted": stored[1], "fingerprints": stored[2], "lookups": lookups,
            "lag_p50": statistics.median(lag_ms), "lag_p99": lag_ms[int(0.99 * (len(lag_ms) - 1))],
            "lag_max": lag_ms[-1]}


async def memory(occurrences: int, groups: int) -> tuple[float, float]:
    proc = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp:
        integ = EnhancedErrorHandlingIntegration(None, validate_config(
            {"database": str(Path(tmp) / "mem.duckdb"), "auto_recover": False}))
        await integ.start()
        msgs = messages(groups)
        for i in range(20_000):  # warm-up: every group exists, caches are full
            tmpl, ctx = msgs[i % groups]
            await integ.report_error(tmpl.format(a=i % 7, b=i % 13, n=i), ctx)
        await integ.flush()
        gc.collect()
        base = proc.memory_info().rss
        for i in range(occurrences):
            tmpl, ctx = msgs[i % groups]
            await integ.report_error(tmpl.format(a=i % 7, b=i % 13, n=i), ctx)
            if i % 1000 == 0:
                await asyncio.sleep(0)
        await integ.flush()
        gc.collect()
        grown = (proc.memory_info().rss - base) / 1e6
        await integ.stop()
    return grown, base / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--occurrences", type=int, default=100_000)
    ap.add_argument("--groups", type=int, default=10_000)
    ap.add_argument("--memory-occurrences", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cap", type=int, default=10_000, help="max_groups_in_memory of the past-the-cap run (0: skip)")
    ap.add_argument("--yield-every", type=int, default=10, help="reports between yields to the loop")
    args = ap.parse_args()
    results = [asyncio.run(run(args.occurrences, args.groups, args.yield_every)) for _ in range(args.runs)]
    floors = [floor_run(args.occurrences, args.groups) for _ in range(10)]
    floor = statistics.median(floors)
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print(f"report_error: {args.occurrences:,} occurrences over {int(med['groups']):,} groups, "
          f"median of {args.runs} runs")
    print(f"  throughput      {med['rate']:>10,.0f} occurrences/s (no wait for commit)")
    print(f"  CPU             {med['cpu_us']:>10.1f} us per occurrence (every thread of the process)")
    print(f"  plain-Python floor {floor:>10,.0f} occurrences/s (median of 10 runs in this process)")
    print(f"  ratio to the floor {med['rate'] / floor:>7.3f} (goal >= 0.20)")
    print(f"  flush after     {med['flush'] * 1000:>10.1f} ms")
    print(f"  loop lag p50    {med['lag_p50']:>10.2f} ms")
    print(f"  loop lag p99    {med['lag_p99']:>10.2f} ms")
    print(f"  loop lag max    {med['lag_max']:>10.2f} ms")
    if args.cap:
        groups = 3 * args.cap
        occ = 3 * groups
        print(f"past the cap: {groups:,} groups (3x max_groups_in_memory = {args.cap:,}), {occ:,} occurrences "
              "round-robin (every group evicted before it recurs):")
        for concurrent, how in ((0, "one at a time"), (64, "64 at a time")):
            r = asyncio.run(run(occ, groups, args.yield_every, cap=args.cap, concurrent=concurrent))
            exact = r["groups"] == groups == r["fingerprints"] and r["counted"] == occ  # fingerprints: open groups
            print(f"  {how:>13}: {r['rate']:,.0f} occurrences/s ({r['rate'] / med['rate']:.3f} of the in-memory "
                  f"rate), {r['cpu_us']:,.0f} us CPU per occurrence, {r['lookups']:,} store lookups, "
                  f"p99 loop lag {r['lag_p99']:.2f} ms; stored "
                  f"{r['groups']:,} groups, {r['counted']:,} occurrences counted -> "
                  f"{'EXACT' if exact else 'NOT EXACT'}", flush=True)
    if args.memory_occurrences:
        grown, base = asyncio.run(memory(args.memory_occurrences, args.groups))
        print(f"memory: RSS grew {grown:.1f} MB over {args.memory_occurrences:,} occurrences (base {base:.0f} MB)")


if __name__ == "__main__":
    main()
