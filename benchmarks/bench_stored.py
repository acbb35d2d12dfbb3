"""Startup memory over many stored groups (issue 26 item 3): RSS once started on an empty database
and on one with N stored groups (the default config: 10,000 of them loaded, the fingerprints of
the rest remembered for lookups), the startup's seconds, and what a miss in memory costs (the
check whether a fingerprint never seen may be stored), per fingerprint.

The data is bulk-loaded through the store's own bulk path in parts of 100,000 groups; each
measurement runs in a fresh process.
Run: python benchmarks/bench_stored.py [--groups 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
from coordinator_plugins.error_handling.model import (  # noqa: E402
    ErrorCategory,
    ErrorContext,
    ErrorReport,
    ErrorSeverity,
    ErrorType,
)
from coordinator_plugins.error_handling.storage.records import GroupRecord, OccurrenceRecord  # noqa: E402

PART = 100_000


async def load(db: str, groups: int) -> None:
    cfg = validate_config({"database": db, "auto_recover": False, "database_memory_mb": 1024})
    loader = EnhancedErrorHandlingIntegration(None, cfg)
    await loader.store.open()
    start = datetime.now(UTC) - timedelta(hours=12)
    for base in range(0, groups, PART):
        recs, occ = [], []
        for g in range(base, min(groups, base + PART)):
            t = start + timedelta(milliseconds=20 * g)
            fp = f"{g * 0x9E3779B97F4A7C15 % (1 << 127):032x}"  # spread like a hash (top bit 0)
            report = ErrorReport(
                error_id=f"{g:032x}", error_type=ErrorType.SYSTEM, error_severity=ErrorSeverity.MEDIUM,
                message=f"failure {g}", context=ErrorContext(component=f"comp{g % 40}", operation="op", timestamp=t),
                category=ErrorCategory.COORDINATOR_ERROR, fingerprint=fp, first_seen=t, last_seen=t)
            recs.append(GroupRecord.of(report))
            occ.append(OccurrenceRecord(report.error_id, t, report.message, "w0"))
        await loader.store.bulk_load(recs, occ)  # type: ignore[attr-defined]  # DuckDB's bulk path
    await loader.store.close()


async def measure(db: str) -> dict[str, Any]:
    integ = EnhancedErrorHandlingIntegration(None, validate_config({"database": db, "auto_recover": False}))
    t = time.perf_counter()
    await integ.start()
    startup = time.perf_counter() - t
    rss = psutil.Process().memory_info().rss / 2**20
    groups = integ.error_handler.groups
    n = 100_000
    never = [f"{(i + 1) * 0xD1B54A32D192ED03 % (1 << 128) | 1 << 127:032x}" for i in range(n)]  # none stored
    t = time.perf_counter()
    maybe = sum(groups.lookup_needed(fp) for fp in never)
    miss_us = (time.perf_counter() - t) / n * 1e6
    await integ.stop()
    return {"startup_s": startup, "rss_mib": rss, "miss_us": miss_us, "false_positive": maybe / n}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--load":
        asyncio.run(load(sys.argv[2], int(sys.argv[3])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        print(json.dumps(asyncio.run(measure(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=1_000_000)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; default config")
    print("| stored groups | startup s | RSS MiB | miss check us | false positives |")
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (0, args.groups):
            db = str(Path(tmp) / f"g{n}.duckdb")
            if n:
                subprocess.run([sys.executable, __file__, "--load", db, str(n)], check=True, cwd=ROOT)
            out = subprocess.run([sys.executable, __file__, "--measure", db], check=True, capture_output=True,
                                 text=True, cwd=ROOT)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {n:,} | {r['startup_s']:.2f} | {r['rss_mib']:.0f} | {r['miss_us']:.2f} | "
                  f"{r['false_positive']:.2%} |", flush=True)


if __name__ == "__main__":
    main()
