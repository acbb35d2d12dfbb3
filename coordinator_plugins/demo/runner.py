"""``coordinator-plugins demo``: a coordinator, real workers, real faults, and the plugin
recovering them with no help; a live view, a summary, and an HTML report.

A run goes: bind the port, open a fresh database (or the one ``--database`` names), start the
workers, submit tasks and inject faults, let running tasks finish, wait for recoveries in
flight, stop the coordinator, and read every number of the summary back through the plugin's
HTTP API, so that the summary, the last progress line and the database agree.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from aiohttp import web

from coordinator_plugins.demo.collect import ApiClient, Before, attribute, before, collect, learned, tally
from coordinator_plugins.demo.faults import FaultInjector
from coordinator_plugins.demo.live import LiveView, routed_logs
from coordinator_plugins.demo.report import progress_lines, render_html, render_table, summary_rows
from coordinator_plugins.error_handling import ERROR_HANDLING_KEY, ErrorReport
from coordinator_plugins.error_handling.recovery.outcome import RECOVERY_OUTCOMES, recovery_outcome
from coordinator_plugins.httpio import auth_headers
from coordinator_plugins.reference import COORDINATOR_KEY, SECURITY_KEY, build_app

REPLACE_STRATEGY = "coordinator_plugins.error_handling.strategies.replace:ReplaceWorkerStrategy"
QUIET_WAIT = 20.0  # longest wait for recoveries in flight once the tasks are done
WORDS = {"succeeded": "recovered", "failed": "not recovered", "nothing_applicable": "nothing applicable",
         "budget_deferred": "deferred by budget"}


def bind(port: int) -> socket.socket:
    """The listening socket, bound before anything else is started (a taken port fails first)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise OSError(f"--port {port}: cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    return sock


class Demo:
    def __init__(self, args: argparse.Namespace, out: TextIO = sys.stdout) -> None:
        self.args = args
        self.out = out
        self.seed = args.seed if args.seed is not None else random.randrange(2**31)
        self.rng = random.Random(self.seed)
        self.stop = asyncio.Event()
        self.view = LiveView(out)
        self.task_ids: list[str] = []
        self.t0 = time.time()
        self.live = {o: 0 for o in RECOVERY_OUTCOMES}
        self.seen: dict[str, ErrorReport] = {}
        self.stats: dict[str, Any] = {
            "error_times": [], "fault_log": [], "task_samples": [], "workers": args.workers,
            "duration": args.duration, "seed": self.seed,
        }

    # -- set up ---------------------------------------------------------------------------------
    def config(self, run_dir: Path, database: Path) -> dict[str, Any]:
        return {
            "coordinator": {"host": "127.0.0.1", "port": 0, "heartbeat_interval": 0.25, "heartbeat_timeout": 1.5,
                            "scheduler_interval": 0.1, "database": str(run_dir / "coordinator.duckdb"),
                            "worker_max_tasks": 2, "max_local_workers": max(8, self.args.workers)},
            "plugins": {"enabled": ["error_handling"], "error_handling": {
                "database": str(database), "escalation_backoff": 0.2, "escalation_backoff_max": 2.0,
                "default_timeout": 10.0, "recovery_budget": 20, "budget_window": 30.0, "regression_window": 5.0,
                # Faults of one kind come every 6 / fault_rate s on average (12 s by default), each
                # independent of the last: a success counts once its group stayed quiet for 3 s.
                "verify_window": 3.0, "max_recoveries_per_group": 10,
                # A wedged worker (``rehang``) is recovered for good only by a replacement.
                **({"strategies": {"replace": REPLACE_STRATEGY}} if "rehang" in self.args.faults else {}),
                "seed": self.seed}},
        }

    def _banner(self, url: str, database: Path, reused: str | None) -> None:
        a = self.args
        if a.database is None:
            where = "new for this run, in a temporary directory removed at the end; --database PATH keeps one"
        elif reused is not None:
            where = f"reused: {reused}; only this run is counted below"
        else:
            where = "new; kept after the run"
        kinds = ", ".join(a.faults) if a.faults and a.fault_rate > 0 else "none"
        lines = [
            f"demo: {a.workers} workers, tasks for {a.duration:g} s at {a.task_rate:g}/s, faults ({kinds}) at "
            f"{a.fault_rate:g}/s during the first {a.duration * 0.8:g} s, seed {self.seed}",
            f"  dashboard    {url}/dashboard/errors  (open it while the demo runs)",
            f"  database     {database}  ({where})",
            "  coordinator  its own task database lives in a temporary directory, removed at the end",
            f"  report       {a.report}  (written at the end)",
            "  Ctrl-C stops the run cleanly and still writes the summary and the report.",
        ]
        print("\n".join(lines), file=self.out, flush=True)

    async def run(self) -> int:
        a = self.args
        sock = bind(a.port)
        run_dir = Path(tempfile.mkdtemp(prefix="coordinator-plugins-demo-"))
        database = Path(a.database) if a.database else run_dir / "errors.duckdb"
        existed = database.exists()
        runner: web.AppRunner | None = None
        integ: Any = None
        session: aiohttp.ClientSession | None = None
        main = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def interrupt() -> None:
            if self.stop.is_set() and main is not None:
                main.cancel()  # a second Ctrl-C: stop now (cleanup still runs)
            else:
                self.view.event("demo: stopping; finishing up (Ctrl-C again to stop at once)")
                self.stop.set()

        try:
            app = build_app(self.config(run_dir, database))
            coord, integ = app[COORDINATOR_KEY], app[ERROR_HANDLING_KEY]
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()  # opens both databases
            site = web.SockSite(runner, sock)
            await site.start()
            url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            coord.url = coord.launcher.url = url
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, interrupt)
            # The coordinator's token, when COORDINATOR_PLUGINS_API_TOKEN sets one, on every request.
            session = aiohttp.ClientSession(headers=auth_headers(app[SECURITY_KEY].api_token))
            api = ApiClient(session, url, integ.config.api_token)
            prior = await before(api, datetime.now(UTC))
            reused = f"it holds {len(prior.counts)} error groups from earlier runs" if existed else None
            self._banner(url, database, reused)
            self.stats["database"] = str(database) if a.database else "a temporary file (removed)"
            integ.add_recovery_listener(self._on_recovery)

            async def count(report: ErrorReport) -> None:
                self.stats["error_times"].append((time.time(), report.error_type.value))
                self.seen[report.error_id] = report  # the groups this run touched, as the summary counts them

            integ.register_error_hook("*", count)
            faults = FaultInjector(coord, integ, url, list(a.faults), self.rng, self._on_fault, session,
                                   wedge_dir=run_dir / "wedged")
            with routed_logs(self.view):
                await coord.launch_workers(a.workers)
                await self._wait_workers(coord)
                self.t0 = time.time()
                await self._drive(coord, integ, faults)
                await self._drain(coord, integ)
                self._tasks(coord, faults)
                await self._quiesce(coord, integ)
                return await self._finish(api, prior, reused is not None)
        except asyncio.CancelledError:
            if main is not None:
                main.uncancel()  # handled: the cleanup below must run as usual
            self.view.close()
            print("\ndemo: stopped at once; no summary", file=self.out, flush=True)
            return 130
        finally:
            try:
                if integ is not None:  # recoveries cancelled while shutting down are not news
                    with contextlib.suppress(ValueError):
                        integ.remove_recovery_listener(self._on_recovery)
                if session is not None:
                    await session.close()
                if runner is not None:
                    await runner.cleanup()  # stops workers, flushes and closes the databases
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
                sock.close()
                shutil.rmtree(run_dir, ignore_errors=True)

    # -- the run -----------------------------------------------------------------------------------
    async def _wait_workers(self, coord: Any) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self.stop.is_set():
            if sum(1 for w in coord.workers.values() if w.status == "active") >= self.args.workers:
                return
            await asyncio.sleep(0.1)

    async def _drive(self, coord: Any, integ: Any, faults: FaultInjector) -> None:
        start = time.monotonic()
        end = start + self.args.duration
        fault_end = start + self.args.duration * 0.8  # the last stretch lets recovery finish
        next_task = next_fault = start + 0.5
        while not self.stop.is_set() and time.monotonic() < end:
            now = time.monotonic()
            while self.args.task_rate > 0 and next_task <= now:
                self._submit(coord)
                next_task += 1.0 / self.args.task_rate
            if self.args.fault_rate > 0 and next_fault <= now < fault_end:
                await faults.inject()
                next_fault = now + self.rng.expovariate(self.args.fault_rate)
            self._show(coord, integ, f"t={now - start:5.1f}s of {self.args.duration:g}s")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await self.stop.wait()

    def _submit(self, coord: Any) -> None:
        r = self.rng.random()
        outcome = "fail" if r < 0.1 else ("error" if r < 0.13 else "pass")
        spec = {"kind": "sim", "duration": round(self.rng.uniform(0.05, 0.6), 3), "outcome": outcome, "timeout": 20}
        task = coord.submit(spec)
        self.task_ids.append(task.task_id)
        if outcome == "error":  # an infrastructure flake: the retry strategy should re-run it and pass
            async def heal() -> None:
                await asyncio.sleep(0.05)
                task.spec["outcome"] = "pass"
            asyncio.ensure_future(heal())

    def _task_counts(self, coord: Any) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.task_ids:
            s = coord.tasks[t].status
            counts[s] = counts.get(s, 0) + 1
        return counts

    async def _drain(self, coord: Any, integ: Any) -> None:
        """Let running and pending tasks finish (and stuck workers be recovered) before stopping."""
        deadline = time.monotonic() + (5 if self.stop.is_set() else 45)
        while time.monotonic() < deadline:
            c = self._task_counts(coord)
            if not sum(v for k, v in c.items() if k not in ("completed", "failed")):
                return
            self._show(coord, integ, "finishing the tasks")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await self.stop.wait()

    async def _quiesce(self, coord: Any, integ: Any) -> None:
        """Nothing may change the database once the summary is read: let recoveries in flight end,
        stop further recoveries, stop the coordinator (and its error reports), flush."""
        deadline = time.monotonic() + (2 if self.stop.is_set() else QUIET_WAIT)
        rm = integ.recovery_manager
        while rm.inflight and time.monotonic() < deadline:
            self._show(coord, integ, "recoveries ending")
            await asyncio.sleep(0.1)
        # A success counts once it held (SPEC 9): let the last ones finish their verify window.
        deadline = time.monotonic() + (0 if self.stop.is_set() else integ.config.verify_window + 1)
        while rm.probation.pending and time.monotonic() < deadline:
            self._show(coord, integ, "successes being verified")
            await asyncio.sleep(0.1)
        await integ.recovery_manager.close()
        await coord.stop()
        await integ.flush()

    def _show(self, coord: Any, integ: Any, head: str) -> None:
        c = self._task_counts(coord)
        now = time.time() - self.t0
        samples = self.stats["task_samples"]
        running = c.get("running", 0) + c.get("assigned", 0)
        if not samples or now - samples[-1][0] >= 0.5:
            samples.append((round(now, 2), c.get("pending", 0), running))
        live = {
            "submitted": len(self.task_ids), "completed": c.get("completed", 0), "running": running,
            "pending": c.get("pending", 0), "lost": 0, "faults_total": len(self.stats["fault_log"]),
            "occurrences": len(self.stats["error_times"]), "groups": len(self.seen),
            "open_groups": sum(1 for r in self.seen.values() if r.is_open), "recoveries": sum(self.live.values()),
            "outcomes": self.live, "in_flight": len(integ.recovery_manager.inflight),
        }
        self.view.status(progress_lines(live, head))

    def _on_fault(self, kind: str, detail: str, target: dict[str, str]) -> None:
        now = time.time()
        self.stats["fault_log"].append({"t": now, "kind": kind, "detail": detail, "target": target})
        self.view.event(f"{now - self.t0:7.1f} s  fault     {kind}: {detail}")

    def _on_recovery(self, info: dict[str, Any]) -> None:
        outcome = recovery_outcome(info)
        self.live[outcome] += 1
        how = (f"by {info['strategy_id']} at L{info['recovery_level']}" if info["success"]
               else f"ended at L{info['recovery_level']}")
        self.view.event(f"{time.time() - self.t0:7.1f} s  recovery  {WORDS[outcome]}: {info['error_type']} group "
                        f"{str(info['error_id'])[:8]} {how} in {info['execution_time']:.2f} s")

    def _tasks(self, coord: Any, faults: FaultInjector) -> None:
        st = self.stats
        final = [coord.tasks[t] for t in self.task_ids]
        done = [t for t in final if t.status == "completed"]
        st["submitted"] = len(final)
        st["completed"] = len(done)
        st["passed"] = sum(1 for t in done if (t.result or {}).get("outcome") == "pass")
        st["failed_tests"] = len(done) - st["passed"]
        st["errored"] = sum(1 for t in final if t.status == "failed")
        st["lost"] = sum(1 for t in final if t.status not in ("completed", "failed"))
        st["faults"] = dict(faults.counts)

    # -- the summary --------------------------------------------------------------------------------
    async def _finish(self, api: ApiClient, prior: Before, reused: bool) -> int:
        st = self.stats
        st["interrupted"] = self.stop.is_set()
        res = await collect(api, prior)
        t = tally(res) | {k: st[k] for k in ("submitted", "completed", "lost")}
        t |= {"running": 0, "pending": 0, "faults_total": sum(st["faults"].values()), "interrupted": st["interrupted"]}
        self.view.status(progress_lines(t, "done"), force=True)  # the last progress: the summary's numbers
        self.view.close()
        know = learned(res, {r["error_type"] for r in res.recoveries})
        rows = summary_rows(st, t, know)
        if reused and know:
            rows.append(("note", "what was learned includes the earlier runs kept in this database"))
        print("\nsummary\n" + render_table(rows), file=self.out, flush=True)
        recoveries = [{**r, "end": datetime.fromisoformat(str(r["at"])).timestamp()} for r in res.recoveries]
        st["t0"] = self.t0
        st["span"] = max([time.time() - self.t0, *(r["end"] - self.t0 for r in recoveries)])
        links = attribute(st["fault_log"], res, self.t0)
        html = render_html(st, rows, t, recoveries, links)
        await asyncio.to_thread(Path(self.args.report).write_text, html, encoding="utf-8")
        print(f"report: {self.args.report}", file=self.out, flush=True)
        if self.stop.is_set():
            print("demo: interrupted; stopped cleanly", file=self.out, flush=True)
            return 130
        if st["lost"]:
            print(f"demo: {st['lost']} task(s) lost", file=self.out, flush=True)
            return 1
        return 0


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo from parsed command-line options (``cli.py`` checks them); exit status."""
    from coordinator_plugins.error_handling.storage.base import StoreUnavailable

    try:
        return asyncio.run(Demo(args).run())
    except (ValueError, StoreUnavailable, OSError) as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
