"""HTTP API figures (issues 6 and 18), every server in a fresh process of its own, the load from
wrk (2 threads, 64 connections, 10 s by default), so that neither the client nor the GIL of a
Python client caps what the bare handler can do.

1. POST /errors throughput (a durable 202: group commit included) of the plugin with its default
   config and with ``auto_recover = false``, against a bare aiohttp JSON POST handler measured in
   the same run; five alternating rounds (bare, default, off), each server a fresh process.
   Goal: default >= 50% of bare. The CPU time the server process spent per request is printed too.
2. With 100,000 groups stored: the latency of one group's GET /errors/{id}, of the first page
   and of a deep page of GET /errors (also with the API's filters), and of GET /diagnostics,
   each as a ratio to the single group's GET (goal <= 4x); and a walk through every group with
   the cursor (each exactly once).
Run: python benchmarks/bench_api.py [--groups N] [--seconds S] [--connections C] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coordinator_plugins.error_handling import ERROR_HANDLING_KEY  # noqa: E402
from coordinator_plugins.reference import build_app  # noqa: E402

WRK_SCRIPT = r"""
local i = 0
request = function()
  i = i + 1
  local k = i % 64
  local body = string.format('{"message":"worker %d lost connection to 10.0.0.%d:5432 (attempt %d)",' ..
    '"component":"worker-%d","exception_type":"ConnectionResetError"}', k, i % 250, i, k % 16)
  return wrk.format("POST", "/api/errors", {["Content-Type"] = "application/json"}, body)
end
"""


# -- servers (each in its own process) ----------------------------------------------------------
def make_app(kind: str, tmp: str) -> web.Application:
    if kind == "bare":
        async def bare(request: web.Request) -> web.Response:
            body = await request.json()
            return web.json_response({"ok": True, "n": len(body)}, status=202)

        app = web.Application()
        app.router.add_post("/api/errors", bare)
        return app
    eh: dict[str, Any] = {"database": str(Path(tmp) / "api.duckdb")}
    if kind == "off":
        eh["auto_recover"] = False
    return build_app({"coordinator": {"port": 0, "database": str(Path(tmp) / "coord.duckdb")},
                      "plugins": {"enabled": ["error_handling"], "error_handling": eh}})


RARE = 20  # the oldest groups are of component "rare"; the oldest RESOLVED groups are resolved
RESOLVED = 100


async def fill(app: web.Application, groups: int) -> None:
    """``groups`` groups over 40 components, the oldest of a rare component and the oldest
    resolved: selective filters whose matches all lie at the far end of the order."""
    integ = app[ERROR_HANDLING_KEY]
    oldest = []
    for i in range(groups):
        tag = "".join(chr(97 + (i // 26**k) % 26) for k in range(4))
        report = await integ.report_error(f"failure kind {tag}", {"component": "rare" if i < RARE else f"c{i % 40}"})
        if i < RESOLVED:
            oldest.append(report.error_id)
        if i % 1000 == 0:
            await asyncio.sleep(0)
    for error_id in oldest:
        await integ.resolve_error(error_id, "manual")
    await integ.flush()


async def serve(kind: str, groups: int) -> None:
    if os.environ.get("SWITCH"):
        sys.setswitchinterval(float(os.environ["SWITCH"]))
    with tempfile.TemporaryDirectory() as tmp:
        app = make_app(kind, tmp)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        if groups:
            await fill(app, groups)
        print(json.dumps({"port": runner.addresses[0][1]}), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()


class Server:
    """A server process; ``cpu()`` is the CPU time it has used so far (user + system)."""

    def __init__(self, kind: str, groups: int = 0) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(groups)],
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {kind} server did not start")
        self.url = f"http://127.0.0.1:{json.loads(line)['port']}"
        self.ps = psutil.Process(self.proc.pid)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- load -------------------------------------------------------------------------------------------
def wrk(url: str, seconds: float, threads: int, connections: int, script: str) -> dict[str, float]:
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "-s", script, url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": rps, "requests": total, "non2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(0) if errors else ""}


def post_round(kind: str, args: argparse.Namespace, script: str) -> dict[str, float]:
    server = Server(kind)
    try:
        c0 = server.cpu()
        res = wrk(server.url, args.seconds, args.threads, args.connections, script)
        res["cpu_us"] = (server.cpu() - c0) / max(1, res["requests"]) * 1e6
    finally:
        server.stop()
    return res


async def latency(session: aiohttp.ClientSession, url: str, n: int) -> float:
    """Median of ``n`` sequential requests (ms), after a warm-up."""
    lat = []
    for i in range(n + 5):
        t = time.perf_counter()
        async with session.get(url) as r:
            await r.read()
            assert r.status == 200, (url, r.status)
        if i >= 5:
            lat.append((time.perf_counter() - t) * 1000)
    return statistics.median(lat)


async def read_figures(base: str, n: int, groups: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/api/errors?limit=1") as r:
            one = (await r.json())["errors"][0]["error_id"]

        async def cursor_at(query: str, depth: int) -> str:
            """The cursor ``depth`` groups deep (pages of 1000)."""
            cursor = ""
            for _ in range(depth // 1000):
                more = f"&cursor={cursor}" if cursor else ""
                async with s.get(base + f"/api/errors?{query}&limit=1000" + more) as r:
                    cursor = (await r.json())["next_cursor"]
            return cursor

        deep = await cursor_at("status=all", groups // 2)
        deep_f = await cursor_at("status=open&component=c7", groups // 80)
        out = {
            "single": await latency(s, base + f"/api/errors/{one}", n),
            "first": await latency(s, base + "/api/errors?status=all&limit=100", n),
            "deep": await latency(s, base + f"/api/errors?status=all&limit=100&cursor={deep}", n),
            "first_filtered": await latency(s, base + "/api/errors?status=open&component=c7&limit=100", n),
            "deep_filtered": await latency(s, base + f"/api/errors?status=open&component=c7&limit=100&cursor={deep_f}",
                                           n),
            "severity_filtered": await latency(s, base + "/api/errors?severity=medium&error_type=unknown&limit=100", n),
            "rare": await latency(s, base + "/api/errors?status=all&component=rare&limit=100", n),
            "resolved": await latency(s, base + "/api/errors?status=resolved&limit=100", n),
            "diagnostics": await latency(s, base + "/api/diagnostics", n),
        }
        seen: list[str] = []
        cursor = None
        t = time.perf_counter()
        while True:
            q = "/api/errors?status=all&limit=1000" + (f"&cursor={cursor}" if cursor else "")
            async with s.get(base + q) as r:
                body = await r.json()
            seen += [e["error_id"] for e in body["errors"]]
            cursor = body["next_cursor"]
            if not cursor:
                break
        out.update(paged=len(seen), unique=len(set(seen)), paging_s=time.perf_counter() - t)
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        asyncio.run(serve(sys.argv[2], int(sys.argv[3])))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=200, help="sequential requests per read figure")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--skip-get", action="store_true")
    ap.add_argument("--skip-post", action="store_true")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    if not args.skip_post:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(WRK_SCRIPT)
        print(f"POST /errors under wrk -t{args.threads} -c{args.connections} -d{args.seconds:g}s, {args.rounds} "
              "alternating rounds, each server a fresh process:")
        rows: dict[str, list[dict[str, float]]] = {"bare": [], "default": [], "off": []}
        try:
            for rnd in range(args.rounds):
                for kind in rows:
                    res = post_round(kind, args, f.name)
                    rows[kind].append(res)
                    print(f"  round {rnd + 1} {kind:>7}: {res['rps']:>8,.0f} req/s, {res['cpu_us']:>5.0f} us CPU "
                          f"per request, non-2xx {res['non2xx']} {res['socket_errors']}", flush=True)
        finally:
            os.unlink(f.name)
        med = {k: statistics.median(r["rps"] for r in v) for k, v in rows.items()}
        cpu = {k: statistics.median(r["cpu_us"] for r in v) for k, v in rows.items()}
        per_round = [rows["default"][i]["rps"] / rows["bare"][i]["rps"] for i in range(args.rounds)]
        print(f"  medians: bare {med['bare']:,.0f} req/s ({cpu['bare']:.0f} us CPU/req), default "
              f"{med['default']:,.0f} ({cpu['default']:.0f} us), auto_recover off {med['off']:,.0f} "
              f"({cpu['off']:.0f} us)")
        ratio = med["default"] / med["bare"]
        # three decimals and a verdict: 0.496 printed as "0.50" would read as the goal met
        print(f"  ratio default / bare: {ratio:.3f} (per round "
              f"{', '.join(f'{r:.2f}' for r in per_round)}; goal >= 0.50: {'met' if ratio >= 0.5 else 'NOT met'})")
        print(f"  ratio auto_recover off / bare: {med['off'] / med['bare']:.3f}")
    if not args.skip_get:
        t = time.perf_counter()
        server = Server("off", args.groups)
        fill_s = time.perf_counter() - t
        try:
            g = asyncio.run(read_figures(server.url, args.requests, args.groups))
        finally:
            server.stop()
        single = g["single"]
        print(f"reads with {args.groups:,} groups stored (filled through report_error in {fill_s:.1f} s), median of "
              f"{args.requests} sequential requests, ratio to one group's GET (goal <= 4x):")
        for key, label in (("single", "GET /errors/{id}"), ("first", "GET /errors first page (limit 100)"),
                           ("deep", f"GET /errors page {args.groups // 2:,} groups deep"),
                           ("first_filtered", "GET /errors?status=open&component=c7 first page"),
                           ("deep_filtered", "GET /errors?status=open&component=c7 deep page"),
                           ("severity_filtered", "GET /errors?severity=medium&error_type=unknown"),
                           ("rare", f"GET /errors?status=all&component=rare ({RARE}, oldest)"),
                           ("resolved", f"GET /errors?status=resolved ({RESOLVED}, oldest)"),
                           ("diagnostics", "GET /diagnostics")):
            print(f"  {label:<48} {g[key]:>7.2f} ms  {g[key] / single:>5.2f}x")
        print(f"paging all groups with limit=1000: {g['paged']:,} items, {g['unique']:,} unique, "
              f"{g['paging_s']:.2f} s")


if __name__ == "__main__":
    main()
