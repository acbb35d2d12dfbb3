"""``coordinator-plugins demo --compare off,ladder,score,adaptive``: the same farm, task stream and
fault schedule once per policy, one after another, each on a fresh database kept in its own
directory; then a side-by-side table, a verdict line and an HTML report.

``off`` is the reference coordinator with no plugin at all. Every other policy runs the plugin
with ``selection`` set to it, and the same strategies (the built-ins and the opt-in ``replace``).

What is the same from one policy to the next: the tasks (their specs and submission times, drawn
from the seed), the times and kinds of the faults (drawn from the seed, apart from the tasks),
and the seed of every recovery choice. Which worker a fault hits is drawn from the same stream
among the workers alive at that moment, so it can differ once the farms differ.

Each policy's directory holds ``errors.duckdb`` (the plugin's database, for ``evaluate``),
``coordinator.duckdb`` (the coordinator's task records) and ``tasks.json`` (each task's
submission and completion, seconds since the first submission), from which the table is drawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from aiohttp import web

from coordinator_plugins.demo.collect import ApiClient, before, collect, tally
from coordinator_plugins.demo.compare_report import render_compare_html, render_compare_table, verdict
from coordinator_plugins.demo.faults import FaultInjector
from coordinator_plugins.demo.live import LiveView, routed_logs
from coordinator_plugins.demo.report import percentile
from coordinator_plugins.demo.runner import REPLACE_STRATEGY, bind
from coordinator_plugins.error_handling import ERROR_HANDLING_KEY
from coordinator_plugins.httpio import auth_headers
from coordinator_plugins.reference import COORDINATOR_KEY, SECURITY_KEY, build_app

POLICIES = ("off", "ladder", "score", "adaptive")
DRAIN_WAIT = 60.0  # longest wait for the last tasks once submission ended


def parse_policies(text: str) -> list[str]:
    """``"off,adaptive"`` -> ``["off", "adaptive"]``; ValueError naming the unknown ones."""
    names = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [p for p in names if p not in POLICIES]
    if unknown or not names:
        raise ValueError(f"unknown polic{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown) or '(none)'}; "
                         f"accepted: {', '.join(POLICIES)}, comma-separated")
    return names


def task_stream(seed: int, duration: float, rate: float) -> list[tuple[float, dict[str, Any]]]:
    """(seconds after the start, spec) of every task: the same for every policy of one seed. Tasks
    of 0.3-0.5 s on workers that run one at a time: at 6 tasks/s, 4 workers are about 60% busy,
    so that each worker lost for good shows in the time tasks wait."""
    rng = random.Random(seed)
    out: list[tuple[float, dict[str, Any]]] = []
    t = 0.5
    while rate > 0 and t < duration:
        r = rng.random()
        outcome = "fail" if r < 0.1 else "pass"  # a failing test is a result: it completes
        out.append((t, {"kind": "sim", "duration": round(rng.uniform(0.3, 0.5), 3), "outcome": outcome,
                        "timeout": 20}))
        t += 1.0 / rate
    return out


def fault_times(seed: int, duration: float, rate: float) -> list[float]:
    """When faults are injected (during the first 70% of the run): the same for every policy."""
    rng = random.Random(seed ^ 0x5EED)
    out: list[float] = []
    t = 1.0
    while rate > 0 and t < duration * 0.7:
        out.append(t)
        t += rng.expovariate(rate)
    return out


def summarize(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """Task columns of the table, from ``tasks.json``'s records (also used by the tests)."""
    done = [t for t in tasks if t["status"] == "completed"]
    tis = [t["finished"] - t["submitted"] for t in done]
    return {
        "submitted": len(tasks),
        "completed": len(done),
        "failed": sum(1 for t in tasks if t["status"] == "failed"),
        "lost": sum(1 for t in tasks if t["status"] not in ("completed", "failed")),
        "tis_mean": statistics.fmean(tis) if tis else None,
        "tis_p95": percentile(tis, 0.95) if tis else None,
        "makespan": max(t["finished"] for t in done) if done else None,
        "curve": [(f, float(i + 1)) for i, f in enumerate(sorted(t["finished"] for t in done))],
    }


class PolicyRun:
    """One policy's run of the farm."""

    def __init__(self, policy: str, args: Any, where: Path, view: LiveView) -> None:
        self.policy = policy
        self.args = args
        self.where = where
        self.view = view
        self.seed = int(args.seed)

    def config(self) -> dict[str, Any]:
        plugin = {"database": str(self.where / "errors.duckdb"), "selection": self.policy,
                  "escalation_backoff": 0.2, "escalation_backoff_max": 2.0, "default_timeout": 10.0,
                  "recovery_budget": 20, "budget_window": 30.0, "regression_window": 5.0, "verify_window": 3.0,
                  "max_recoveries_per_group": 10, "strategies": {"replace": REPLACE_STRATEGY}, "seed": self.seed}
        return {
            "coordinator": {"host": "127.0.0.1", "port": 0, "heartbeat_interval": 0.25, "heartbeat_timeout": 1.5,
                            "scheduler_interval": 0.1, "database": str(self.where / "coordinator.duckdb"),
                            "worker_max_tasks": 1, "max_local_workers": max(16, 2 * self.args.workers)},
            "plugins": {"enabled": [] if self.policy == "off" else ["error_handling"],
                        **({} if self.policy == "off" else {"error_handling": plugin})},
        }

    async def run(self) -> dict[str, Any]:
        a = self.args
        await asyncio.to_thread(self.where.mkdir, parents=True)
        sock = bind(0)
        app = build_app(self.config())
        coord, integ = app[COORDINATOR_KEY], app.get(ERROR_HANDLING_KEY)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        session: aiohttp.ClientSession | None = None
        try:
            await runner.setup()
            await web.SockSite(runner, sock).start()
            url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            coord.url = coord.launcher.url = url
            session = aiohttp.ClientSession(headers=auth_headers(app[SECURITY_KEY].api_token))
            api = ApiClient(session, url, integ.config.api_token) if integ is not None else None
            prior = await before(api, datetime.now(UTC)) if api is not None else None
            faults = FaultInjector(coord, integ, url, list(a.faults), random.Random(self.seed ^ 0xFA17),
                                   self._on_fault, session, wedge_dir=self.where / "wedged")
            self.fault_log: list[dict[str, Any]] = []
            with routed_logs(self.view):
                await coord.launch_workers(a.workers)
                await self._wait_workers(coord)
                ids, t0 = await self._drive(coord, faults)
                await self._drain(coord, ids)
                await self._quiesce(coord, integ)
                res = await collect(api, prior) if api is not None and prior is not None else None
            tasks = self._records(coord, ids, t0)
            await asyncio.to_thread((self.where / "tasks.json").write_text, json.dumps(tasks), encoding="utf-8")
            row = summarize(tasks)
            t = tally(res) if res is not None else None
            row |= {
                "policy": self.policy, "dir": str(self.where),
                "ttr": t["ttr"] if t else [], "strategy_runs": t["strategy_runs"] if t else None,
                "recoveries": t["recoveries"] if t else None,
                "by_strategy": t["by_strategy"] if t else {},
                "worker_restarts": coord.launcher.starts - a.workers,
                "workers_alive": sum(1 for w in coord.workers.values() if w.status == "active"),
                "faults": dict(faults.counts),
            }
            return row
        finally:
            if session is not None:
                await session.close()
            await runner.cleanup()
            sock.close()

    def _on_fault(self, kind: str, detail: str, target: dict[str, str]) -> None:
        self.fault_log.append({"t": time.time(), "kind": kind, "detail": detail, "target": target})
        self.view.event(f"  {self.policy:>8}  fault  {kind}: {detail}")

    async def _wait_workers(self, coord: Any) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if sum(1 for w in coord.workers.values() if w.status == "active") >= self.args.workers:
                return
            await asyncio.sleep(0.1)
        raise OSError(f"policy {self.policy}: {self.args.workers} workers did not all register within 30 s")

    async def _drive(self, coord: Any, faults: FaultInjector) -> tuple[dict[str, float], float]:
        a = self.args
        stream = task_stream(self.seed, a.duration, a.task_rate)
        when = fault_times(self.seed, a.duration, a.fault_rate)
        ids: dict[str, float] = {}  # task id -> submitted (monotonic)
        t0 = time.monotonic()
        while stream or when:
            now = time.monotonic() - t0
            while stream and stream[0][0] <= now:
                ids[coord.submit(stream.pop(0)[1]).task_id] = time.monotonic()
            if when and when[0] <= now:
                when.pop(0)
                await faults.inject()
            self._show(coord, ids, f"t={now:5.1f}s of {a.duration:g}s")
            await asyncio.sleep(0.05)
        return ids, t0

    def _show(self, coord: Any, ids: dict[str, float], head: str) -> None:
        done = sum(1 for t in ids if coord.tasks[t].status == "completed")
        alive = sum(1 for w in coord.workers.values() if w.status == "active")
        self.view.status([f"{self.policy}: {head}  tasks {len(ids)} submitted, {done} completed; "
                          f"{alive} workers serving; faults {len(self.fault_log)}"])

    async def _drain(self, coord: Any, ids: dict[str, float]) -> None:
        deadline = time.monotonic() + DRAIN_WAIT
        while time.monotonic() < deadline:
            if all(coord.tasks[t].status in ("completed", "failed") for t in ids):
                return
            self._show(coord, ids, "finishing the tasks")
            await asyncio.sleep(0.1)

    async def _quiesce(self, coord: Any, integ: Any) -> None:
        if integ is not None:
            rm = integ.recovery_manager
            await _until(lambda: not rm.inflight, 20.0)  # recoveries in flight end
            # a success counts once it held (SPEC 9): let the last ones finish their verify window
            await _until(lambda: not rm.probation.pending, integ.config.verify_window + 1)
            await rm.close()
        await coord.stop()
        if integ is not None:
            await integ.flush()

    @staticmethod
    def _records(coord: Any, ids: dict[str, float], t0: float) -> list[dict[str, Any]]:
        out = []
        for tid, sub in ids.items():
            t = coord.tasks[tid]
            fin = t.finished_at if t.status in ("completed", "failed") and t.finished_at is not None else None
            out.append({"task_id": tid, "status": t.status, "attempts": t.attempt, "submitted": round(sub - t0, 4),
                        "finished": round(fin - t0, 4) if fin is not None else None})
        return out


async def _until(cond: Any, limit: float) -> None:
    for _ in range(int(limit / 0.1) + 1):
        if cond():
            return
        await asyncio.sleep(0.1)


async def run_compare(args: Any, out: TextIO = sys.stdout) -> int:
    policies: list[str] = args.compare
    base = Path(args.compare_dir or f"demo-compare-{args.seed}")
    taken = [str(base / p) for p in policies if (base / p).exists()]
    if taken:
        raise ValueError(f"--compare-dir: {', '.join(taken)} exist(s); each policy runs on a fresh database: "
                         "remove them or name another --compare-dir")
    print(f"demo --compare {','.join(policies)}: {args.workers} workers, tasks for {args.duration:g} s at "
          f"{args.task_rate:g}/s, faults ({', '.join(args.faults)}) at {args.fault_rate:g}/s during the first "
          f"{args.duration * 0.7:g} s, seed {args.seed}; databases kept in {base}/<policy>/", file=out, flush=True)
    rows = []
    view = LiveView(out)
    try:
        for p in policies:
            view.event(f"{p}: running")
            row = await PolicyRun(p, args, base / p, view).run()
            rows.append(row)
            view.event(f"{p}: done, {row['completed']} of {row['submitted']} tasks completed, {row['lost']} lost")
    finally:
        view.close()
    print("\n" + render_compare_table(rows), file=out)
    print(verdict(rows), file=out)
    for r in rows:
        db = f"{r['dir']}/errors.duckdb" if r["policy"] != "off" else "(no plugin database)"
        print(f"  {r['policy']:>8}: {db}, tasks in {r['dir']}/coordinator.duckdb and tasks.json", file=out)
    html = render_compare_html(rows, args)
    await asyncio.to_thread(Path(args.report).write_text, html, encoding="utf-8")
    print(f"report: {args.report}", file=out, flush=True)
    return 1 if any(r["lost"] for r in rows) else 0


def run_compare_demo(args: Any) -> int:
    """``demo --compare``'s exit status: 0, 1 when a policy lost a task, 2 on a setup error."""
    from coordinator_plugins.error_handling.storage.base import StoreUnavailable

    if args.seed is None:
        args.seed = random.randrange(2**31)
    try:
        return asyncio.run(run_compare(args))
    except (ValueError, StoreUnavailable, OSError) as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            print("\ndemo --compare: interrupted", file=sys.stderr)
        return 130
