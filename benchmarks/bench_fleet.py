"""Fleet figures (issue 15), each coordinator a real ``serve`` process and wrk the load generator:

1. durable POST /api/errors on PostgreSQL vs DuckDB, one coordinator each, in one run
   (goal: PostgreSQL >= 50% of DuckDB);
2. two coordinators on one PostgreSQL database vs one (goal: >= 1.6x), both loaded at once;
3. takeover time after SIGKILL: a member holding a recovery lease and running tasks is killed;
   how long until a survivor holds the recovery and has its tasks (goal: <= lease_ttl + 2 s);
4. exactness of fleet counts under concurrent posting: every 202 any member sent is counted once
   in the stored groups (must be exact).

Needs wrk and a PostgreSQL server (PGHOST/PGPORT, default 127.0.0.1:5432, trust or PGPASSWORD).
Run: python benchmarks/bench_fleet.py [--seconds S] [--connections C] [--lease-ttl T]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fleet_procs import Member, poll, start_worker  # noqa: E402
from tests.pg_harness import create_database, drop_database  # noqa: E402

LUA = r"""
local counter = 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; bad = 0; counter = math.random(1, 1000000) * 1000 end
request = function()
  counter = counter + 1
  local body = '{"message":"worker lost connection to 10.0.0.' .. (counter % 250) .. ':5432 (attempt ' .. counter ..
    ')","component":"worker-' .. (counter % 16) .. '","exception_type":"ConnectionResetError"}'
  return wrk.format("POST", "/api/errors", {["Content-Type"] = "application/json"}, body)
end
response = function(status, headers, body)
  if status == 202 then ok = ok + 1 else bad = bad + 1 end
end
done = function(summary, latency, requests)
  local o, b = 0, 0
  for _, t in ipairs(threads) do o = o + t:get("ok"); b = b + t:get("bad") end
  io.write(string.format("RESULT %d %d %.3f %.3f\n", o, b, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000))
end
"""


def wrk(url: str, seconds: float, connections: int, script: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s", "-s", str(script), url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wrk_result(proc: subprocess.Popen[str], seconds: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=seconds + 120)
    m = re.search(r"RESULT (\d+) (\d+) ([\d.]+) ([\d.]+)", out)
    if m is None:
        raise RuntimeError(f"wrk gave no result:\n{out}")
    ok, bad = int(m.group(1)), int(m.group(2))
    return {"ok": ok, "bad": bad, "rps": ok / seconds, "p50_ms": float(m.group(3)), "p99_ms": float(m.group(4))}


def stored_total(m: Member) -> int:
    total, cursor = 0, None
    while True:
        q = "/api/errors?status=all&limit=1000" + (f"&cursor={cursor}" if cursor else "")
        data = m.get(q)
        total += sum(e["aggregated_count"] for e in data["errors"])
        cursor = data["next_cursor"]
        if not cursor:
            return total


async def post_exactly(urls: list[str], per_member: int, connections: int) -> int:
    """POST ``per_member`` errors (16 groups) to each URL with ``connections`` in flight; the 202s."""
    import aiohttp

    acked = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as s:
        async def one(url: str, i: int) -> None:
            nonlocal acked
            body = {"message": f"worker lost connection to 10.0.0.{i % 250}:5432 (attempt {i})",
                    "component": f"worker-{i % 16}", "exception_type": "ConnectionResetError"}
            async with s.post(url + "/api/errors", json=body) as r:
                await r.read()
                acked += r.status == 202

        await asyncio.gather(*(one(u, i) for u in urls for i in range(per_member)))
    return acked


def member(tmp: Path, name: str, database: str, coordinator_db: str, **plugin: Any) -> Member:
    m = Member(tmp, name, database, {"auto_recover": False, "metrics": False, **plugin},
               {"database": coordinator_db})
    return m.start()


def throughput(args: argparse.Namespace, tmp: Path, script: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # 1. one coordinator on DuckDB, then one on PostgreSQL, the same load
    duck = member(tmp, "duck", str(tmp / "errors.duckdb"), str(tmp / "coord.duckdb"))
    try:
        out["duckdb"] = wrk_result(wrk(duck.url, args.seconds, args.connections, script), args.seconds)
        out["duckdb"]["stored"] = stored_total(duck)
    finally:
        duck.stop()
    url = asyncio.run(create_database())
    try:
        one = member(tmp, "pg1", url, url)
        try:
            out["postgres"] = wrk_result(wrk(one.url, args.seconds, args.connections, script), args.seconds)
            out["postgres"]["stored"] = stored_total(one)
        finally:
            one.stop()
    finally:
        asyncio.run(drop_database(url))
    # 2. two coordinators on one database, loaded at once (the same connections in all)
    url = asyncio.run(create_database())
    try:
        a, b = member(tmp, "pa", url, url), member(tmp, "pb", url, url)
        try:
            procs = [wrk(m.url, args.seconds, max(2, args.connections // 2), script) for m in (a, b)]
            runs = [wrk_result(p, args.seconds) for p in procs]
            out["fleet2"] = {"ok": sum(r["ok"] for r in runs), "rps": sum(r["rps"] for r in runs),
                             "per_member": [r["rps"] for r in runs]}
            # 4. exactness: wrk does not count the answers in flight when it stops, so a client that
            # waits for every answer posts the same groups to both members at once
            before = stored_total(a)
            acked = asyncio.run(post_exactly([a.url, b.url], args.exact, args.connections))
            out["exact"] = {"acknowledged": acked, "stored_a": stored_total(a) - before,
                            "stored_b": stored_total(b) - before}
        finally:
            a.stop()
            b.stop()
    finally:
        asyncio.run(drop_database(url))
    return out


def takeover(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    url = asyncio.run(create_database())
    probe = {"strategies": {"probe": "tests.strategies_for_tests:FleetProbe"}, "builtin_strategies": [],
             "verify_window": 0}
    env_a = {"PROBE_LOG": str(tmp / "probe.log"), "PROBE_MEMBER": "ta", "PROBE_SECONDS": "600"}
    env_b = {"PROBE_LOG": str(tmp / "probe.log"), "PROBE_MEMBER": "tb", "PROBE_SECONDS": "0.1"}
    coord = {"lease_ttl": args.lease_ttl}
    a = Member(tmp, "ta", url, probe, coord, env_a).start()
    b = Member(tmp, "tb", url, probe, coord, env_b).start()
    workers = [start_worker([a.url, b.url], f"bw{i}", tmp / f"bw{i}.log") for i in range(2)]
    try:
        poll(lambda: a.get("/api/status")["workers"]["active"] == 2, 30, "workers on a")
        for _ in range(4):
            a.request("POST", "/api/tasks", {"kind": "sim", "duration": 30})
        status, data = a.request("POST", "/api/errors", {"message": "build cache corrupted", "component": "cache"})
        assert status == 202, data
        poll(lambda: (tmp / "probe.log").exists(), 30, "a's recovery running")
        poll(lambda: a.get("/api/status")["tasks"].get("running", 0) >= 2, 30, "tasks running on a")
        a.kill()
        killed = time.monotonic()
        recovery = poll(lambda: b.get("/api/diagnostics")["fleet_status"]["takeovers"], 120, "recovery takeover")
        t_recovery = time.monotonic() - killed
        tasks = poll(lambda: b.get("/api/status")["fleet"]["takeovers"], 120, "task takeover")
        t_tasks = time.monotonic() - killed
        return {"lease_ttl": args.lease_ttl, "recovery_s": t_recovery, "tasks_s": t_tasks,
                "recovery_since_renewal_s": recovery[0]["seconds_since_last_renewal"],
                "tasks_moved": len(tasks[0]["tasks"])}
    finally:
        for w in workers:
            w.terminate()
            w.wait(10)
        b.stop()
        a.stop()
        asyncio.run(drop_database(url))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="wrk duration per measurement (default 10)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections per run (default 32)")
    p.add_argument("--exact", type=int, default=5000, help="errors posted to each member for the exactness check")
    p.add_argument("--lease-ttl", type=float, default=5.0, help="lease_ttl of the takeover run (default 5)")
    args = p.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    os.environ["PYTHONPATH"] = os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH", "")) if x)
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    script = tmp / "post.lua"
    script.write_text(LUA)
    try:
        t = throughput(args, tmp, script)
        k = takeover(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    d, g, f = t["duckdb"], t["postgres"], t["fleet2"]
    print(f"bench_fleet ({args.seconds:g} s per run, wrk -t2 -c{args.connections}, {os.cpu_count()} cores; "
          "ratios are measured within this run)")
    print(f"  1. durable POST /api/errors, one coordinator:  DuckDB {d['rps']:8.0f}/s (p99 {d['p99_ms']:.1f} ms)  "
          f"PostgreSQL {g['rps']:8.0f}/s (p99 {g['p99_ms']:.1f} ms)  ratio {g['rps'] / d['rps']:.2f} "
          f"(goal >= 0.50)")
    print(f"  2. two coordinators on one database: {f['rps']:8.0f}/s "
          f"({' + '.join(f'{x:.0f}' for x in f['per_member'])}) vs one {g['rps']:.0f}/s  ratio "
          f"{f['rps'] / g['rps']:.2f} (goal >= 1.6)")
    print(f"  3. takeover after SIGKILL (lease_ttl {k['lease_ttl']:g} s): recovery lease {k['recovery_s']:.2f} s "
          f"({k['recovery_since_renewal_s']:.2f} s after its last renewal), {k['tasks_moved']} task(s) "
          f"{k['tasks_s']:.2f} s (goal <= lease_ttl + 2 = {k['lease_ttl'] + 2:g} s)")
    e = t["exact"]
    same = e["acknowledged"] == e["stored_a"] == e["stored_b"]
    print(f"  4. fleet counts under concurrent posting to both members: {e['acknowledged']} acknowledged, "
          f"{e['stored_a']} counted (as member a reads it), {e['stored_b']} (as b reads it)  -> "
          + ("exact" if same else "NOT EXACT"))
    print(f"     (wrk runs: DuckDB {d['ok']} acknowledged / {d['stored']} counted, PostgreSQL {g['ok']} / "
          f"{g['stored']}; the difference is the answers in flight when wrk stopped, at most -c per run)")
    print(json.dumps({"throughput": t, "takeover": k}, default=str))


if __name__ == "__main__":
    main()
