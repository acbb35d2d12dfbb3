"""HTTP API figures (issue 6), each server in this process and the load from a separate client
process, so that the two do not share a core or the GIL.

1. GET /errors?limit=100 latency with 100,000 groups stored (target p99 < 20 ms), and paging
   through all of them with the cursor (each group exactly once).
2. POST /errors throughput (durable group commit included) against a bare aiohttp JSON POST
   handler, measured in the same run (target >= 50%), with ``auto_recover = false`` and with the
   plugin's default config (recovery on; target: default >= 80% of ``auto_recover = false``).
Run: python benchmarks/bench_api.py [--groups N] [--seconds S] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coordinator_plugins.error_handling import ERROR_HANDLING_KEY
from coordinator_plugins.reference import build_app


# -- client side (runs in a subprocess) -----------------------------------------------------
async def client_get(url: str, n: int) -> dict[str, Any]:
    lat = []
    async with aiohttp.ClientSession() as s:
        for _ in range(20):  # warm-up
            async with s.get(url + "/api/errors?limit=100") as r:
                await r.read()
        for _ in range(n):
            t = time.perf_counter()
            async with s.get(url + "/api/errors?limit=100") as r:
                body = await r.json()
            lat.append((time.perf_counter() - t) * 1000)
            assert r.status == 200 and len(body["errors"]) == 100
        seen: list[str] = []
        cursor = None
        t = time.perf_counter()
        while True:
            q = "/api/errors?status=all&limit=1000" + (f"&cursor={cursor}" if cursor else "")
            async with s.get(url + q) as r:
                body = await r.json()
            seen += [e["error_id"] for e in body["errors"]]
            cursor = body["next_cursor"]
            if not cursor:
                break
        paging = time.perf_counter() - t
    lat.sort()
    return {"p50": statistics.median(lat), "p99": lat[int(0.99 * (len(lat) - 1))], "max": lat[-1],
            "paged": len(seen), "unique": len(set(seen)), "paging_s": paging}


async def client_post(url: str, path: str, seconds: float, concurrency: int) -> dict[str, Any]:
    done = 0
    statuses: dict[int, int] = {}
    stop = time.perf_counter() + seconds
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as s:
        async def loop(k: int) -> None:
            nonlocal done
            i = 0
            while time.perf_counter() < stop:
                i += 1
                body = {"message": f"worker {k} lost connection to 10.0.0.{i % 250}:5432 (attempt {i})",
                        "component": f"worker-{k % 16}", "exception_type": "ConnectionResetError"}
                async with s.post(url + path, json=body) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                done += 1

        t = time.perf_counter()
        await asyncio.gather(*(loop(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - t
    return {"rps": done / elapsed, "statuses": statuses}


# -- server side ------------------------------------------------------------------------------
def run_client(args: list[str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--client", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


COMMIT_WINDOW = 0.001


def plugin_app(tmp: str, default: bool = False) -> web.Application:
    """The plugin with ``auto_recover = false`` (and the benchmark's commit window), or, with
    ``default``, with nothing but its database set."""
    eh: dict[str, Any] = {"database": str(Path(tmp) / "api.duckdb")}
    if not default:
        eh.update(auto_recover=False, commit_window=COMMIT_WINDOW)
    return build_app({"coordinator": {"port": 0, "database": str(Path(tmp) / "coord.duckdb")},
                      "plugins": {"enabled": ["error_handling"], "error_handling": eh}})


async def bench_get(groups: int, requests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        app = plugin_app(tmp)
        runner, url = await serve(app)
        integ = app[ERROR_HANDLING_KEY]
        t = time.perf_counter()
        for i in range(groups):
            tag = "".join(chr(97 + (i // 26**k) % 26) for k in range(4))
            await integ.report_error(f"failure kind {tag}", {"component": f"c{i % 40}"})
        await integ.flush()
        fill = time.perf_counter() - t
        result = await asyncio.to_thread(run_client, ["get", url, str(requests)])
        await runner.cleanup()
    return {**result, "fill_s": fill}


async def bench_post(seconds: float, concurrency: int) -> dict[str, Any]:
    async def bare(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"ok": True, "n": len(body)}, status=202)

    bare_app = web.Application()
    bare_app.router.add_post("/api/errors", bare)
    runner, url = await serve(bare_app)
    base = await asyncio.to_thread(run_client, ["post", url, str(seconds), str(concurrency)])
    await runner.cleanup()
    out: dict[str, Any] = {"bare": base}
    for name, default in (("plugin", False), ("default", True)):
        with tempfile.TemporaryDirectory() as tmp:
            app = plugin_app(tmp, default)
            runner, url = await serve(app)
            out[name] = await asyncio.to_thread(run_client, ["post", url, str(seconds), str(concurrency)])
            integ = app[ERROR_HANDLING_KEY]
            out[name]["commits"] = integ.store.commits
            out[name]["recoveries"] = integ.recovery_manager.recoveries
            await runner.cleanup()
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        kind, url = sys.argv[2], sys.argv[3]
        if kind == "get":
            res = asyncio.run(client_get(url, int(sys.argv[4])))
        else:
            res = asyncio.run(client_post(url, "/api/errors", float(sys.argv[4]), int(sys.argv[5])))
        print(json.dumps(res))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--skip-get", action="store_true")
    ap.add_argument("--commit-window", type=float, default=0.001, help="the plugin's commit_window (s)")
    ap.add_argument("--runs", type=int, default=3, help="POST comparisons; the median ratio is reported")
    args = ap.parse_args()
    global COMMIT_WINDOW
    COMMIT_WINDOW = args.commit_window
    if not args.skip_get:
        g = asyncio.run(bench_get(args.groups, args.requests))
        print(f"GET /errors?limit=100 with {args.groups:,} groups stored ({args.requests} sequential requests): "
              f"p50 {g['p50']:.2f} ms, p99 {g['p99']:.2f} ms, max {g['max']:.2f} ms")
        print(f"paging all groups with limit=1000: {g['paged']:,} items, {g['unique']:,} unique, "
              f"{g['paging_s']:.2f} s")
    print(f"POST, {args.concurrency} concurrent clients for {args.seconds:.0f} s each: bare, then the plugin with "
          f"auto_recover = false (commit_window {args.commit_window * 1000:g} ms), then its default config; "
          f"{args.runs} rounds:")
    ratios, default_ratios = [], []
    for _ in range(args.runs):
        p = asyncio.run(bench_post(args.seconds, args.concurrency))
        ratio = p["plugin"]["rps"] / p["bare"]["rps"]
        default_ratio = p["default"]["rps"] / p["plugin"]["rps"]
        ratios.append(ratio)
        default_ratios.append(default_ratio)
        print(f"  bare aiohttp JSON handler {p['bare']['rps']:>8,.0f} req/s | POST /errors (durable 202), "
              f"auto_recover off {p['plugin']['rps']:>8,.0f} req/s ({p['plugin']['commits']:,} commits), "
              f"default config {p['default']['rps']:>8,.0f} req/s ({p['default']['recoveries']:,} recoveries) | "
              f"off / bare {ratio:.0%}, default / off {default_ratio:.0%}")
    print(f"  median ratio, auto_recover off / bare: {statistics.median(ratios):.0%}")
    print(f"  median ratio, default config / auto_recover off: {statistics.median(default_ratios):.0%} (goal >= 80%)")


if __name__ == "__main__":
    main()
