"""How the plugin grows with its data (issue 18): a table over 10^4, 10^5, 10^6 stored occurrences
and 10^3, 10^4, 10^5 groups of

- ingest: report_error over the groups seen last (in memory), occurrences/s, no wait for commit;
- cold ingest: report_error over groups that are only in the store (evicted, or not loaded at
  startup: each occurrence's group is looked up by its fingerprint), occurrences/s;
- page: GET /errors' query (limit 100), first page and a page half-way down, median ms;
- diagnostics: ``run_diagnostics()``, median ms;
- startup: ``start()`` on the stored data, 1% of the groups left with counts to reconcile as a
  crash leaves them (reconciled in one statement), s; goal < 1.5 s at 10^6 / 10^5;
- bytes per occurrence: the database file after a checkpoint over the occurrences stored;
- RSS: the process's resident memory once started (MB).
Each cell runs in a fresh process; data is bulk-loaded through the store's own bulk path
(``DuckDBStore.bulk_load``, DuckDB's appender).
Run: python benchmarks/bench_scale.py [--occurrences 10000,100000,1000000] [--groups 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration, validate_config  # noqa: E402
from coordinator_plugins.error_handling.intake.classify import classify  # noqa: E402
from coordinator_plugins.error_handling.intake.group import fingerprint  # noqa: E402
from coordinator_plugins.error_handling.model import ErrorContext, ErrorReport  # noqa: E402
from coordinator_plugins.error_handling.storage.records import (  # noqa: E402
    GroupQuery,
    GroupRecord,
    OccurrenceRecord,
)


def message(g: int) -> tuple[str, dict[str, str]]:
    tag = "".join(chr(97 + (g // 26**k) % 26) for k in range(4))
    return f"Connection reset by peer at 10.0.0.1:5432 [kind {tag}]", {"component": f"comp{g % 40}",
                                                                       "operation": "op"}


def build(occurrences: int, groups: int) -> tuple[list[GroupRecord], list[OccurrenceRecord]]:
    """Groups as report_error would make them, and their occurrences, spread over the last day;
    1% of the groups have two occurrences their row does not count yet (a crash's leftovers)."""
    start = datetime.now(UTC) - timedelta(days=1)
    step = timedelta(seconds=86_000 / occurrences)
    per = occurrences // groups
    reports: list[ErrorReport] = []
    occ: list[OccurrenceRecord] = []
    for g in range(groups):
        text, ctx = message(g)
        cls = classify(None, text, ctx["component"], ctx["operation"])
        fp = fingerprint(cls.error_type.value, cls.category.value, ctx["component"], ctx["operation"], None, text)
        first = start + step * g
        reports.append(ErrorReport(
            error_id=f"{g:032x}", error_type=cls.error_type, error_severity=cls.severity, message=text,
            context=ErrorContext(component=ctx["component"], operation=ctx["operation"], timestamp=first),
            category=cls.category, fingerprint=fp, first_seen=first, last_seen=first, aggregated_count=per))
    t = start
    for i in range(per * groups):  # round-robin, as a farm's recurring failures arrive
        g = i % groups
        t = start + step * i
        occ.append(OccurrenceRecord(reports[g].error_id, t, reports[g].message, f"w{i % 64}"))
        reports[g].last_seen = t
    for g in range(0, groups, 100):  # stale counts: occurrences newer than the group's row
        for k in (1, 2):
            occ.append(OccurrenceRecord(reports[g].error_id, t + timedelta(seconds=k), reports[g].message, "w0"))
    return [GroupRecord.of(r) for r in reports], occ


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def timed(fn: Any, n: int) -> float:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    return median_ms(out)


async def cell(occurrences: int, groups: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "scale.duckdb")
        cfg = validate_config({"database": db, "auto_recover": False})
        loader = EnhancedErrorHandlingIntegration(None, cfg)
        await loader.store.open()
        store0: Any = loader.store  # the DuckDB store: its bulk path
        t = time.perf_counter()
        reports, occ = build(occurrences, groups)
        await store0.bulk_load(reports, occ)
        await store0.read(lambda cur: cur.execute("CHECKPOINT"))
        load_s = time.perf_counter() - t
        await loader.store.close()
        del reports, occ, loader
        size = Path(db).stat().st_size  # noqa: ASYNC240 (once, between two measurements)

        integ = EnhancedErrorHandlingIntegration(None, cfg)
        t = time.perf_counter()
        await integ.start()
        startup = time.perf_counter() - t
        rss = psutil.Process().memory_info().rss / 1e6
        totals = await integ.store.totals()
        stats = (totals.groups, totals.aggregated)
        assert stats == (groups, occurrences + 2 * len(range(0, groups, 100))), stats
        store = integ.store

        async def first() -> Any:
            return await store.list_groups(GroupQuery("all", limit=100))

        deep_cursor = None
        for _ in range(max(1, groups // 2000)):  # half-way down, by pages of 1000
            deep_cursor = (await store.list_groups(GroupQuery("all", limit=1000, after=deep_cursor))).next_cursor

        async def deep() -> Any:
            return await store.list_groups(GroupQuery("all", limit=100, after=deep_cursor))

        async def single() -> Any:
            return await store.get_group(f"{groups // 3:032x}")

        page_first = await timed(first, 30)
        page_deep = await timed(deep, 30)
        get_one = await timed(single, 30)
        diag = await timed(integ.run_diagnostics, 30)

        hot = min(groups, 1000)  # the groups seen last are the ones in memory
        n = 20_000
        t = time.perf_counter()
        for i in range(n):
            text, ctx = message(groups - 1 - i % hot)
            await integ.report_error(text, ctx)
            if i % 10 == 0:
                await asyncio.sleep(0)
        ingest = n / (time.perf_counter() - t)
        in_memory = len(integ.error_handler.groups)
        cold, lookups, m = None, 0, 0
        if in_memory < groups:  # groups only in the store: each occurrence looks its group up
            lookups0 = integ.error_handler.stored.lookups
            m = min(2000, groups - in_memory)
            t = time.perf_counter()
            for i in range(m):
                text, ctx = message(i)
                await integ.report_error(text, ctx)
            cold = m / (time.perf_counter() - t)
            lookups = integ.error_handler.stored.lookups - lookups0
        await integ.flush()
        totals = await integ.store.totals()
        after = (totals.groups, totals.aggregated)
        assert after == (groups, stats[1] + n + m), ("grouping not exact", after, stats, n, m)
        await integ.stop()
    return {"occurrences": occurrences, "groups": groups, "load_s": load_s, "startup_s": startup, "rss_mb": rss,
            "bytes_per_occurrence": size / occurrences, "page_first_ms": page_first, "page_deep_ms": page_deep,
            "get_one_ms": get_one, "diagnostics_ms": diag, "ingest": ingest, "cold_ingest": cold,
            "in_memory": in_memory, "lookups": lookups}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--cell":
        print(json.dumps(asyncio.run(cell(int(sys.argv[2]), int(sys.argv[3])))))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--occurrences", default="10000,100000,1000000")
    ap.add_argument("--groups", default="1000,10000,100000")
    args = ap.parse_args()
    occs = [int(x) for x in args.occurrences.split(",")]
    grps = [int(x) for x in args.groups.split(",")]
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start; each cell a fresh "
          "process, default config (max_groups_in_memory 50,000), auto_recover off")
    head = ("occurrences", "groups", "ingest/s", "cold/s", "page 1 ms", "deep ms", "GET 1 ms", "diag ms",
            "startup s", "B/occ", "RSS MB")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---:" for _ in head) + "|")
    results: list[dict[str, Any]] = []
    for o in occs:
        for g in grps:
            if g > o:
                print(f"| {o:,} | {g:,} | n/a: fewer occurrences than groups (each group has at least one) |")
                continue
            out = subprocess.run([sys.executable, __file__, "--cell", str(o), str(g)], capture_output=True,
                                 text=True, cwd=ROOT)
            if out.returncode != 0:
                err = out.stderr.strip().splitlines() or [f"exit status {out.returncode}"]
                print(f"| {o:,} | {g:,} | failed: {err[-1]} |", flush=True)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(r)
            cold = f"{r['cold_ingest']:,.0f}" if r["cold_ingest"] else "-"
            print(f"| {o:,} | {g:,} | {r['ingest']:,.0f} | {cold} | {r['page_first_ms']:.2f} | "
                  f"{r['page_deep_ms']:.2f} | {r['get_one_ms']:.2f} | {r['diagnostics_ms']:.2f} | "
                  f"{r['startup_s']:.2f} | {r['bytes_per_occurrence']:.0f} | {r['rss_mb']:.0f} |", flush=True)
    goals(results)


def goals(results: list[dict[str, Any]]) -> None:
    """Issue 18's goals, each a ratio within one cell (one process): pages and diagnostics <= 4x a
    single group's GET at the most groups; startup < 1.5 s at the most data; lookups of groups only
    in the store beside in-memory ingest."""
    if not results:
        return
    most = max(r["groups"] for r in results)
    print("goals (ratios within one cell; 'GET 1' is one group's store read):")
    for r in (r for r in results if r["groups"] == most):
        one = r["get_one_ms"]
        worst = max(r["page_first_ms"], r["page_deep_ms"], r["diagnostics_ms"]) / one
        print(f"  {r['occurrences']:,} occ / {r['groups']:,} groups: page 1 {r['page_first_ms'] / one:.1f}x, "
              f"deep page {r['page_deep_ms'] / one:.1f}x, diagnostics {r['diagnostics_ms'] / one:.2f}x "
              f"a single GET -> {'met' if worst <= 4 else 'NOT met'} (goal <= 4x)")
    big = max(results, key=lambda r: (r["occurrences"], r["groups"]))
    print(f"  startup at {big['occurrences']:,} occ / {big['groups']:,} groups: {big['startup_s']:.2f} s -> "
          f"{'met' if big['startup_s'] < 1.5 else 'NOT met'} (goal < 1.5 s)")
    for r in (r for r in results if r["cold_ingest"]):
        print(f"  cold lookups at {r['occurrences']:,} occ / {r['groups']:,} groups ({r['in_memory']:,} in memory): "
              f"{r['cold_ingest']:,.0f}/s one at a time, {r['cold_ingest'] / r['ingest']:.3f} of in-memory ingest, "
              f"{r['lookups']:,} store lookups")


if __name__ == "__main__":
    main()
