"""``coordinator-plugins demo``: a coordinator, real workers, real faults, and the plugin
recovering them with no help; live progress, a summary, and an HTML report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from aiohttp import web

from coordinator_plugins.demo.faults import FaultInjector
from coordinator_plugins.demo.report import render_html, render_table, summary_rows
from coordinator_plugins.error_handling import ERROR_HANDLING_KEY, ErrorReport
from coordinator_plugins.httpio import auth_headers
from coordinator_plugins.reference import COORDINATOR_KEY, SECURITY_KEY, build_app


class Progress:
    """A live block on a terminal; plain lines every few seconds otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.lines = 0
        self.last_plain = 0.0

    def show(self, lines: list[str]) -> None:
        if self.tty:
            if self.lines:
                self.out.write(f"\x1b[{self.lines}F")
            for line in lines:
                self.out.write("\x1b[2K" + line + "\n")
            self.lines = len(lines)
            self.out.flush()
        elif time.monotonic() - self.last_plain >= 2.0:
            self.last_plain = time.monotonic()
            print(" | ".join(lines), file=self.out, flush=True)

    def event(self, text: str) -> None:
        if not self.tty:
            print(text, file=self.out, flush=True)


def successes_by_level(recoveries: list[dict[str, Any]]) -> dict[int, int]:
    """Successful recoveries that held, counted by the level that ended them."""
    out: dict[int, int] = {}
    for r in recoveries:
        if r["held"]:
            out[r["recovery_level"]] = out.get(r["recovery_level"], 0) + 1
    return out


class Demo:
    def __init__(self, args: argparse.Namespace, out: TextIO = sys.stdout) -> None:
        self.args = args
        self.out = out
        self.rng = random.Random(args.seed)
        self.stop = asyncio.Event()
        self.progress = Progress(out)
        self.stats: dict[str, Any] = {
            "submitted": 0, "recoveries": [], "error_times": [], "fault_log": [], "started": time.time(),
            "workers": args.workers, "duration": args.duration, "seed": args.seed, "database": args.database,
        }
        self.task_ids: list[str] = []

    def config(self) -> dict[str, Any]:
        db = Path(self.args.database)
        return {
            "coordinator": {"host": "127.0.0.1", "port": self.args.port, "heartbeat_interval": 0.25,
                            "heartbeat_timeout": 1.5, "scheduler_interval": 0.1,
                            "database": str(db.with_name(db.stem + "-coordinator.duckdb")), "worker_max_tasks": 2},
            "plugins": {"enabled": ["error_handling"], "error_handling": {
                "database": str(db), "escalation_backoff": 0.2, "escalation_backoff_max": 2.0,
                "default_timeout": 10.0, "recovery_budget": 20, "budget_window": 30.0, "regression_window": 5.0,
                # Faults of one kind come every 6 / fault_rate s on average (12 s by default), each
                # independent of the last: a success counts once its group stayed quiet for 3 s.
                "verify_window": 3.0, "max_recoveries_per_group": 10,
                "seed": self.args.seed if self.args.seed is not None else random.randrange(2**31)}},
        }

    async def run(self) -> int:
        app = build_app(self.config())
        coord, integ = app[COORDINATOR_KEY], app[ERROR_HANDLING_KEY]
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.args.port)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        coord.url = coord.launcher.url = url
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        integ.recovery_manager.listeners.append(self._on_recovery)
        integ.recovery_manager.verify_listeners.append(self._on_verified)

        async def count(report: ErrorReport) -> None:
            self.stats["error_times"].append(time.time())

        integ.register_error_hook("*", count)
        print(f"demo: coordinator at {url} (dashboard {url}/dashboard/errors), {self.args.workers} workers, "
              f"{self.args.duration:.0f} s, database {self.args.database}", file=self.out, flush=True)
        # The coordinator's token, when COORDINATOR_PLUGINS_API_TOKEN sets one, on every request.
        session = aiohttp.ClientSession(headers=auth_headers(app[SECURITY_KEY].api_token))
        faults = FaultInjector(coord, integ, url, [k for k in self.args.faults.split(",") if k], self.rng,
                               self._on_fault)
        faults.session = session
        try:
            await coord.launch_workers(self.args.workers)
            await self._wait_workers(coord)
            await self._drive(coord, integ, faults, session)
            await self._drain(coord)
        finally:
            await self._collect(coord, integ, faults)
            await session.close()
            await runner.cleanup()  # stops workers, flushes and closes the database
        return self._finish()

    async def _wait_workers(self, coord: Any) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self.stop.is_set():
            if sum(1 for w in coord.workers.values() if w.status == "active") >= self.args.workers:
                return
            await asyncio.sleep(0.1)

    async def _drive(self, coord: Any, integ: Any, faults: FaultInjector, session: aiohttp.ClientSession) -> None:
        start = time.monotonic()
        end = start + self.args.duration
        fault_end = start + self.args.duration * 0.8  # the last stretch lets recovery finish
        next_task = next_fault = start + 0.5
        while not self.stop.is_set() and time.monotonic() < end:
            now = time.monotonic()
            while self.args.task_rate > 0 and next_task <= now:
                await self._submit(coord)
                next_task += 1.0 / self.args.task_rate
            if self.args.fault_rate > 0 and next_fault <= now < fault_end:
                await faults.inject()
                next_fault = now + self.rng.expovariate(self.args.fault_rate)
            self._show(coord, integ, now - start)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await self.stop.wait()

    async def _submit(self, coord: Any) -> None:
        r = self.rng.random()
        outcome = "fail" if r < 0.1 else ("error" if r < 0.13 else "pass")
        spec = {"kind": "sim", "duration": round(self.rng.uniform(0.05, 0.6), 3), "outcome": outcome, "timeout": 20}
        task = coord.submit(spec)
        self.task_ids.append(task.task_id)
        self.stats["submitted"] += 1
        if outcome == "error":  # an infrastructure flake: the retry strategy should re-run it and pass
            async def heal() -> None:
                await asyncio.sleep(0.05)
                task.spec["outcome"] = "pass"
            asyncio.ensure_future(heal())

    async def _drain(self, coord: Any) -> None:
        """Let running and pending tasks finish (and stuck workers be recovered) before stopping."""
        deadline = time.monotonic() + (5 if self.stop.is_set() else 45)
        while time.monotonic() < deadline:
            open_tasks = [t for t in self.task_ids if coord.tasks[t].status not in ("completed", "failed")]
            if not open_tasks:
                return
            self._show(coord, None, None)
            await asyncio.sleep(0.2)

    def _show(self, coord: Any, integ: Any, elapsed: float | None) -> None:
        counts: dict[str, int] = {}
        for t in self.task_ids:
            s = coord.tasks[t].status
            counts[s] = counts.get(s, 0) + 1
        rec = self.stats["recoveries"]
        by_level = successes_by_level(rec)
        head = f"t={elapsed:5.1f}s" if elapsed is not None else "draining"
        lines = [
            f"{head}  tasks {self.stats['submitted']} submitted, {counts.get('completed', 0)} done, "
            f"{counts.get('running', 0) + counts.get('assigned', 0)} running, {counts.get('pending', 0)} pending",
            f"errors {len(self.stats['error_times'])}  open groups "
            f"{integ.error_handler.groups.count_open() if integ else '-'}  faults {len(self.stats['fault_log'])}",
            f"recoveries {sum(1 for r in rec if r['held'])}/{len(rec)} held  by level "
            + (" ".join(f"L{k}:{v}" for k, v in sorted(by_level.items())) or "-")
            + (f"  budget used {integ.budget.status()['used_total']}" if integ else ""),
        ]
        self.progress.show(lines)

    def _on_fault(self, kind: str, detail: str) -> None:
        self.stats["fault_log"].append((time.time(), kind, detail))
        self.progress.event(f"fault: {detail}")

    def _on_recovery(self, info: dict[str, Any]) -> None:
        # A success counts once it held through the verify window (see _on_verified).
        held = None if info.get("verification") == "pending" else info["success"]
        self.stats["recoveries"].append({"at": time.time(), "success": info["success"], "held": held,
                                         "recovery_id": info.get("recovery_id"),
                                         "recovery_level": info["recovery_level"],
                                         "execution_time": info["execution_time"], "strategy_id": info["strategy_id"],
                                         "attempts": info["attempts"], "error_id": info["error_id"],
                                         "error_type": info["error_type"]})

    def _on_verified(self, event: dict[str, Any]) -> None:
        for r in reversed(self.stats["recoveries"]):
            if r["recovery_id"] == event["recovery_id"] and r["error_id"] == event["error_id"]:
                r["held"] = event["held"]
                return

    async def _collect(self, coord: Any, integ: Any, faults: FaultInjector) -> None:
        st = self.stats
        final = {t: coord.tasks[t] for t in self.task_ids}
        done = [t for t in final.values() if t.status == "completed"]
        st["completed"] = len(done)
        st["passed"] = sum(1 for t in done if (t.result or {}).get("outcome") == "pass")
        st["failed_tests"] = len(done) - st["passed"]
        st["errored"] = sum(1 for t in final.values() if t.status == "failed")
        st["lost"] = sum(1 for t in final.values() if t.status not in ("completed", "failed"))
        st["faults"] = dict(faults.counts)
        st["errors"] = len(st["error_times"])
        st["groups"] = len(integ.error_handler.groups)
        st["open_groups"] = integ.error_handler.groups.count_open()
        by_level = successes_by_level(st["recoveries"])
        by_strategy: dict[str, dict[str, int]] = {}
        by_type_strategy: dict[tuple[str, str], dict[str, int]] = {}
        for r in st["recoveries"]:
            et = r["error_type"]
            for a in r["attempts"]:
                if a["outcome"] in ("not_applicable", "budget_exhausted"):
                    continue
                for d in (by_strategy.setdefault(a["strategy_id"], {"runs": 0, "ok": 0}),
                          by_type_strategy.setdefault((et, a["strategy_id"]), {"runs": 0, "ok": 0})):
                    d["runs"] += 1
                    d["ok"] += int(a["success"] and bool(r["held"]))  # a success counts once it held
        st["by_level"], st["by_strategy"], st["by_type_strategy"] = by_level, by_strategy, by_type_strategy
        st["budget_refused"] = integ.budget.refused
        learned = {}
        for et in sorted({k[0] for k in by_type_strategy}):
            recs = [r for r in await integ.get_strategy_recommendations(et) if r["samples"]]
            if recs:
                best = recs[0]
                learned[et] = (f"{best['strategy_id']} (score {best['score']:.2f}, "
                               f"{best['success_rate']:.0%} of {best['samples']} recent runs)")
        st["learned"] = learned

    def _finish(self) -> int:
        rows = summary_rows(self.stats)
        print("\nsummary\n" + render_table(rows), file=self.out, flush=True)
        Path(self.args.report).write_text(render_html(self.stats, rows), encoding="utf-8")
        print(f"report: {self.args.report}", file=self.out, flush=True)
        if self.stop.is_set():
            print("demo: interrupted; stopped cleanly", file=self.out, flush=True)
            return 130
        if self.stats["lost"]:
            print(f"demo: {self.stats['lost']} task(s) lost", file=self.out, flush=True)
            return 1
        return 0


def run_demo(args: argparse.Namespace) -> int:
    for name, lo in (("workers", 1), ("port", 0)):
        if getattr(args, name) < lo:
            print(f"error: --{name} must be >= {lo}", file=sys.stderr)
            return 2
    if args.duration <= 0 or args.fault_rate < 0 or args.task_rate < 0:
        print("error: --duration must be > 0, and --fault-rate and --task-rate >= 0", file=sys.stderr)
        return 2
    from coordinator_plugins.error_handling.storage.duckdb_store import StoreUnavailable

    try:
        return asyncio.run(Demo(args).run())
    except (ValueError, StoreUnavailable, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
