"""A flood of unique errors against a real ``serve`` process with the plugin's default config
(issue 12, finding 2).

wrk (32 connections, a Lua script) posts N reports (default 200,000) to ``POST /api/errors``,
each with a message of random words and no digit, so that every one is a new group. Meanwhile
``GET /api/errors?limit=10`` is probed once a second (every read has a deadline: a hang is a
failure). Then SIGTERM, and the time until the process has exited. Then ``serve`` again on the
same files, and the groups are counted through the API (paging with the cursor): every
acknowledged (202) report must be there.

Prints: throughput, the status counts (503s with their ``code``), p99 latency, the probes,
the server's peak RSS and the time to a clean shutdown.

Run: python benchmarks/bench_flood.py [--total N] [--connections C] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]

LUA = r"""
-- Each thread posts its share of the reports, then stops; messages are random lowercase words.
counts = {}
codes = {}
local sent = 0
local flagged = false
local done_dir = os.getenv("FLOOD_DONE_DIR")
local done_n = 0
local share = tonumber(os.getenv("FLOOD_SHARE") or "1000")
local letters = "abcdefghijklmnopqrstuvwxyz"
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

local ids = nil

function init(args)
  math.randomseed(os.time() * 1000 + tid * 7919)
  counts = {}
  codes = {}
  ids = io.open(done_dir .. "/ids-" .. tid, "w")  -- the error_id of every 202
  ids:setvbuf("line")  -- written as they come: the thread has no end hook to flush in
end

local function word()
  local n = math.random(4, 9)
  local t = {}
  for i = 1, n do
    local k = math.random(1, 26)
    t[i] = letters:sub(k, k)
  end
  return table.concat(t)
end

local components = {"scheduler", "storage", "network", "runner", "shelf", "power", "fabric", "probe"}

function request()
  sent = sent + 1
  local w = {}
  for i = 1, 7 do w[i] = word() end
  local body = '{"message": "flood ' .. table.concat(w, " ") .. '", "component": "' ..
    components[math.random(1, #components)] .. '", "operation": "run"}'
  return wrk.format("POST", "/api/errors", {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  done_n = done_n + 1
  local key = tostring(status)
  counts[key] = (counts[key] or 0) + 1
  if status == 202 then
    local id = body:match('"error_id"%s*:%s*"([^"]*)"')
    if id then ids:write(id, "\n") end
  end
  if status >= 400 then
    local code = body:match('"code"%s*:%s*"([^"]*)"') or "?"
    local ck = key .. ":" .. code
    codes[ck] = (codes[ck] or 0) + 1
  end
  if done_n >= share and not flagged then
    -- wrk's main thread sleeps for its whole -d: tell the bench, which interrupts it (SIGINT)
    flagged = true
    local f = io.open(done_dir .. "/done-" .. tid, "w")
    f:write(tostring(done_n))
    f:close()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local all = {}
  local allcodes = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for k, v in pairs(c) do all[k] = (all[k] or 0) + v end
    local cc = t:get("codes")
    for k, v in pairs(cc) do allcodes[k] = (allcodes[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(all) do table.insert(parts, '"' .. k .. '": ' .. v) end
  local cparts = {}
  for k, v in pairs(allcodes) do table.insert(cparts, '"' .. k .. '": ' .. v) end
  io.write(string.format(
    'FLOOD {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"timeouts": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"status": {%s}, "codes": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    summary.errors.timeout, summary.errors.connect, summary.errors.read, summary.errors.write,
    table.concat(parts, ", "), table.concat(cparts, ", ")))
end
"""


def start_server(config: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    out = open(log, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "coordinator_plugins", "--log-level", "WARNING", "serve", "--config", str(config),
         "--port", "0"],
        stdout=subprocess.PIPE, stderr=out, cwd=config.parent,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain the rest
            return proc, m.group(1)
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"serve did not start; see {log}")


def get(url: str, timeout: float = 30.0) -> tuple[int, Any, float]:
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = json.loads(r.read())
            return r.status, body, time.perf_counter() - t
    except urllib.error.HTTPError as e:
        try:
            body = json.loads(e.read())
        except ValueError:
            body = None
        return e.code, body, time.perf_counter() - t
    except Exception as e:  # a hang past the client's deadline, a refused connection
        return -1, repr(e), time.perf_counter() - t


class RssWatch(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.samples: list[tuple[float, int]] = []
        self.stopped = False

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stopped:
            try:
                rss = self.proc.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.samples.append((time.monotonic() - t0, rss))
            time.sleep(0.2)


def stored_ids(url: str) -> tuple[set[str], int]:
    """(error ids, pages) through GET /api/errors?status=all, paging with the cursor."""
    ids: set[str] = set()
    pages = 0
    cursor = None
    while True:
        q = "/api/errors?status=all&limit=1000" + (f"&cursor={cursor}" if cursor else "")
        status, body, _ = get(url + q, timeout=120)
        if status != 200:
            raise SystemExit(f"GET {q}: {status} {body}")
        ids.update(e["error_id"] for e in body["errors"])
        pages += 1
        cursor = body.get("next_cursor")
        if not cursor:
            return ids, pages


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--total", type=int, default=200_000, help="reports to post (default 200000)")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-seconds", type=int, default=600, help="wrk's own time limit")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (its path is printed)")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="bench_flood_"))
    config = tmp / "coordinator.toml"
    config.write_text(
        '[coordinator]\nhost = "127.0.0.1"\n\n[plugins]\nenabled = ["error_handling"]\n\n'
        '[plugins.error_handling]\ndatabase = "eh.duckdb"\n'
    )
    (tmp / "flood.lua").write_text(LUA)
    log = tmp / "serve.log"
    proc, url = start_server(config, log)
    watch = RssWatch(proc.pid)
    watch.start()
    rss0 = psutil.Process(proc.pid).memory_info().rss
    print(f"serve pid {proc.pid} at {url}, default plugin config, database {tmp / 'eh.duckdb'}")
    print(f"posting {args.total:,} unique errors: wrk -t{args.threads} -c{args.connections} (Lua bodies)")

    probes: list[tuple[float, int, float]] = []
    probing = True

    def probe() -> None:
        t0 = time.monotonic()
        while probing:
            status, _, took = get(url + "/api/errors?limit=10", timeout=40)
            probes.append((time.monotonic() - t0, status, took))
            time.sleep(1.0)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    done_dir = tmp / "done"
    done_dir.mkdir()
    env = dict(os.environ, FLOOD_SHARE=str(args.total // args.threads), FLOOD_DONE_DIR=str(done_dir))
    t0 = time.monotonic()
    wrk = subprocess.Popen(
        ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.max_seconds}s", "--timeout", "40s",
         "-s", str(tmp / "flood.lua"), url + "/api/errors"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    while wrk.poll() is None and len(list(done_dir.glob("done-*"))) < args.threads:
        time.sleep(0.1)
    wall = time.monotonic() - t0
    if wrk.poll() is None:
        wrk.send_signal(signal.SIGINT)  # every thread is done: end wrk's sleep, print the summary
    stdout, stderr = wrk.communicate(60)
    res = subprocess.CompletedProcess(wrk.args, wrk.returncode, stdout, stderr)
    probing = False
    prober.join(45)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("FLOOD ")), None)
    if line is None:
        print(res.stdout, res.stderr)
        proc.kill()  # leave no server behind
        proc.wait()
        raise SystemExit("wrk printed no summary")
    flood = json.loads(line[6:])
    _, diag, _ = get(url + "/api/diagnostics", timeout=40)
    store = diag.get("database", {}) if isinstance(diag, dict) else {}
    acked = flood["status"].get("202", 0)
    n503 = flood["status"].get("503", 0)

    t_term = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    shutdown = time.monotonic() - t_term
    watch.stopped = True
    watch.join(2)

    proc2, url2 = start_server(config, log)
    try:
        t = time.monotonic()
        stored, pages = stored_ids(url2)
        counted = time.monotonic() - t
    finally:
        proc2.send_signal(signal.SIGTERM)
        proc2.wait(60)
    acked_ids: set[str] = set()
    for f in done_dir.glob("ids-*"):
        acked_ids.update(line for line in f.read_text().split() if line)

    ok_probes = [p for p in probes if p[1] == 200]
    worst_probe = max((p[2] for p in probes), default=0.0)
    probe_statuses: dict[int, int] = {}
    for _, s, _ in probes:
        probe_statuses[s] = probe_statuses.get(s, 0) + 1
    print()
    print(f"requests answered     {flood['requests']:,} in {flood['duration_us'] / 1e6:.1f} s "
          f"(wall {wall:.1f} s): {flood['requests'] / (flood['duration_us'] / 1e6):,.0f} req/s")
    print(f"status counts         {flood['status']}")
    print(f"503 count             {n503:,}" + (f"  by code {flood['codes']}" if flood["codes"] else ""))
    print(f"socket errors         timeout {flood['timeouts']}, connect {flood['connect_errors']}, "
          f"read {flood['read_errors']}, write {flood['write_errors']}")
    print(f"latency               p50 {flood['p50_us'] / 1000:.1f} ms, p99 {flood['p99_us'] / 1000:.1f} ms, "
          f"max {flood['max_us'] / 1000:.1f} ms")
    print(f"GET /api/errors probes {len(probes)} during the flood: statuses {probe_statuses}, "
          f"slowest {worst_probe * 1000:.0f} ms, {len(ok_probes)} answered 200")
    marks = []
    for frac in (0.25, 0.5, 0.75, 1.0):
        upto = [r for t, r in watch.samples if t <= wall * frac]
        if upto:
            marks.append(f"{int(frac * 100)}% {upto[-1] / 2**20:.0f} MB")
    print(f"server RSS            start {rss0 / 2**20:.0f} MB, peak {watch.peak / 2**20:.0f} MB; "
          f"through the flood: {', '.join(marks)}")
    print(f"store after the flood pending_writes {store.get('pending_writes')}, reconnects "
          f"{store.get('reconnects')}, dropped_writes {store.get('dropped_writes')}, "
          f"dropped_occurrences {store.get('dropped_occurrences')}, last_error {store.get('last_error')}")
    print(f"shutdown after SIGTERM {shutdown:.2f} s (exit code {rc})")
    print(f"after restart         {len(stored):,} groups through the API ({pages} pages, {counted:.1f} s) "
          f"for {acked:,} acknowledged reports ({len(acked_ids):,} error ids recorded by wrk)")
    lost = len(acked_ids - stored) + max(0, acked - len(acked_ids))
    print(f"acknowledged missing  {lost:,} (acknowledged error ids not among the stored groups)")
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if lost or shutdown >= 10 or rc != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
