"""``demo --coordinators N --database postgresql://...``: a fleet (SPEC section 10).

N ``serve`` processes share one PostgreSQL database (the plugin's and the reference
coordinator's own state); the worker processes know every coordinator's URL, each starting with a
different one. Tasks are submitted round-robin and the same errors are reported to every member.
Part way through, one member is killed with SIGKILL: its workers move to the next coordinator,
a survivor takes its unfinished tasks and any recovery whose lease it held. The summary says what
moved, how long the takeover took, whether every acknowledged task completed, and whether the
fleet's count of every acknowledged error is exact. Exit 0 when nothing was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import aiohttp

ERRORS = ("connection reset by peer while fetching artifacts from 10.0.0.{n}:8081",
          "checkout of repository timed out after {n} s")


def _toml(config: dict[str, Any]) -> str:
    out = []
    for table, values in config.items():
        out.append(f"[{table}]")
        for k, v in values.items():
            if isinstance(v, dict):
                continue
            out.append(f"{k} = {json.dumps(v)}")
        for k, v in values.items():
            if isinstance(v, dict):
                out.append(f"[{table}.{k}]")
                out.extend(f"{kk} = {json.dumps(vv)}" for kk, vv in v.items())
    return "\n".join(out) + "\n"


class FleetDemo:
    def __init__(self, args: argparse.Namespace, out: TextIO = sys.stdout) -> None:
        self.args = args
        self.out = out
        self.n = int(args.coordinators)
        self.ttl = 5.0
        self.dir = Path(tempfile.mkdtemp(prefix="coordinator-plugins-fleet-"))
        self.members: list[dict[str, Any]] = []
        self.workers: list[asyncio.subprocess.Process] = []
        self.tasks: dict[str, str] = {}  # task id -> the member that acknowledged it
        self.errors_acked: dict[str, int] = {}  # error id -> occurrences acknowledged (202)
        self.killed: dict[str, Any] | None = None
        self.baseline: dict[str, int] = {}  # counts already in a reused database before this run

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # -- processes ------------------------------------------------------------------------------
    async def _start_member(self, i: int) -> dict[str, Any]:
        name = f"c{i + 1}"
        cfg = {
            "coordinator": {"host": "127.0.0.1", "port": 0, "database": self.args.database, "coordinator_id": name,
                            "lease_ttl": self.ttl, "heartbeat_interval": 0.25, "heartbeat_timeout": 2.0,
                            "scheduler_interval": 0.1, "worker_max_tasks": 2},  # its workers ask for 2
            "plugins": {"enabled": ["error_handling"], "error_handling": {
                "database": self.args.database, "escalation_backoff": 0.2, "default_timeout": 10.0,
                "verify_window": 2.0, "recovery_budget": 20, "budget_window": 30.0, "dashboard_path": ""}},
        }
        path = self.dir / f"{name}.toml"
        path.write_text(_toml(cfg))
        log = (self.dir / f"{name}.log").open("a")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "coordinator_plugins", "serve", "--config", str(path), "--port", "0",
            stdout=asyncio.subprocess.PIPE, stderr=log, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise OSError(f"coordinator {name} exited at start; see {self.dir / (name + '.log')}")
                if "listening on" in line:
                    return {"name": name, "proc": proc, "url": line.strip().rsplit(" ", 1)[1], "alive": True}

    async def _start_workers(self) -> None:
        urls = [m["url"] for m in self.members]
        for i in range(self.args.workers):
            mine = urls[i % self.n:] + urls[: i % self.n]  # each starts with a different coordinator
            argv = [sys.executable, "-m", "coordinator_plugins", "worker", "--worker-id", f"w{i + 1}",
                    "--failover-after", "1.5", "--max-tasks", "2"]
            for u in mine:
                argv += ["--url", u]
            self.workers.append(await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.DEVNULL, stderr=(self.dir / f"w{i + 1}.log").open("a"),
                start_new_session=True))

    def _alive(self) -> list[dict[str, Any]]:
        return [m for m in self.members if m["alive"]]

    # -- the run --------------------------------------------------------------------------------
    async def _submit_and_report(self, s: aiohttp.ClientSession, k: int) -> None:
        member = self._alive()[k % len(self._alive())]
        try:
            async with s.post(member["url"] + "/api/tasks", json={"kind": "sim", "duration": 1.0}) as r:
                if r.status == 201:
                    self.tasks[(await r.json())["task_id"]] = member["name"]
            body = {"message": ERRORS[k % 2].format(n=k % 7), "component": "fetch", "operation": "run_task"}
            async with s.post(member["url"] + "/api/errors", json=body) as r:
                if r.status == 202:
                    eid = (await r.json())["error_id"]
                    self.errors_acked[eid] = self.errors_acked.get(eid, 0) + 1
        except (aiohttp.ClientError, TimeoutError):
            pass  # not acknowledged: nothing was promised

    async def _status(self, s: aiohttp.ClientSession, m: dict[str, Any]) -> dict[str, Any]:
        async with s.get(m["url"] + "/api/status") as r:
            return dict(await r.json())

    async def _kill_one(self, s: aiohttp.ClientSession) -> None:
        victim = self.members[0]
        before = await self._status(s, victim)
        os.killpg(victim["proc"].pid, signal.SIGKILL)
        await victim["proc"].wait()
        victim["alive"] = False
        self.killed = {"name": victim["name"], "at": time.monotonic(), "workers": before["workers"]["active"],
                       "takeover_s": None, "tasks_moved": 0, "survivor": None}
        self.say(f"  t+{time.monotonic() - self.t0:5.1f}s  SIGKILL {victim['name']} "
                 f"({before['workers']['active']} workers, {len(before.get('tasks', {}))} task states)")

    async def _watch_takeover(self, s: aiohttp.ClientSession) -> None:
        k = self.killed
        if k is None or k["takeover_s"] is not None:
            return
        for m in self._alive():
            st = await self._status(s, m)
            for t in st.get("fleet", {}).get("takeovers", []):
                if t["dead"] == k["name"]:
                    k.update(takeover_s=time.monotonic() - k["at"], tasks_moved=len(t["tasks"]),
                             survivor=m["name"], silent_for=t["silent_for"])
                    self.say(f"  t+{time.monotonic() - self.t0:5.1f}s  {m['name']} took over {k['name']}: "
                             f"{len(t['tasks'])} unfinished task(s), {k['takeover_s']:.1f} s after the kill")

    async def run(self) -> int:
        a = self.args
        self.say(f"fleet demo: {self.n} coordinators on {_redact(a.database)}, {a.workers} workers, "
                 f"{a.duration:g} s; one coordinator is killed with SIGKILL at {a.duration * 0.4:.0f} s "
                 f"(lease_ttl {self.ttl:g} s)")
        try:
            self.members = [await self._start_member(i) for i in range(self.n)]
            await self._start_workers()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
                return await self._drive(s)
        finally:
            await self._stop_all()

    async def _drive(self, s: aiohttp.ClientSession) -> int:
        a = self.args
        async with s.get(self.members[0]["url"] + "/api/errors?status=all&limit=1000") as r:
            self.baseline = {e["error_id"]: e["aggregated_count"] for e in (await r.json())["errors"]}
        self.t0 = time.monotonic()
        k = 0
        next_line = self.t0
        while (now := time.monotonic()) - self.t0 < a.duration:
            await self._submit_and_report(s, k)
            k += 1
            if self.killed is None and now - self.t0 >= a.duration * 0.4 and self.n > 1:
                await self._kill_one(s)
            if self.killed is not None:
                await self._watch_takeover(s)
            if now >= next_line:
                next_line = now + 2.0
                self.say(f"  t+{now - self.t0:5.1f}s  {len(self.tasks)} tasks, "
                         f"{sum(self.errors_acked.values())} errors acknowledged, {len(self._alive())} coordinators")
            await asyncio.sleep(1.0 / max(a.task_rate, 0.1))
        deadline = time.monotonic() + 60
        while self.killed is not None and self.killed["takeover_s"] is None and time.monotonic() < deadline:
            await self._watch_takeover(s)
            await asyncio.sleep(0.2)
        return await self._summary(s, deadline)

    async def _summary(self, s: aiohttp.ClientSession, deadline: float) -> int:
        survivor = self._alive()[0]
        pending = dict(self.tasks)
        while pending and time.monotonic() < deadline:
            for tid in list(pending):
                async with s.get(f"{survivor['url']}/api/tasks/{tid}") as r:
                    if r.status == 200 and (await r.json()).get("status") == "completed":
                        del pending[tid]
            if pending:
                await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # the last group rows
        exact = 0
        for eid, n in self.errors_acked.items():
            async with s.get(f"{survivor['url']}/api/errors/{eid}") as r:
                exact += r.status == 200 and (await r.json())["aggregated_count"] == n + self.baseline.get(eid, 0)
        async with s.get(f"{survivor['url']}/api/diagnostics") as r:
            diag = await r.json()
        workers = 0
        recoveries = []
        for m in self._alive():
            workers += int((await self._status(s, m))["workers"]["active"])
            async with s.get(f"{m['url']}/api/diagnostics") as r:
                recoveries += (await r.json()).get("fleet_status", {}).get("takeovers", [])
        k = self.killed or {}
        lines = [
            "",
            "fleet summary",
            f"  coordinators        {self.n}; killed {k.get('name', '-')} with SIGKILL; live now: "
            + ", ".join(m["coordinator_id"] for m in diag.get("fleet", [])),
            f"  takeover            {k.get('survivor') or '-'} took {k.get('tasks_moved', 0)} unfinished task(s) "
            + (f"{k['takeover_s']:.1f} s after the kill (lease_ttl {self.ttl:g} s)"
               if k.get("takeover_s") is not None else "(not seen)"),
            f"  recoveries          {len(recoveries)} recovery lease(s) of {k.get('name', '-')} taken over by the "
            "survivors",
            f"  workers             {workers} of {self.args.workers} active on the survivors "
            f"({k.get('workers', 0)} moved from {k.get('name', '-')})",
            f"  tasks               {len(self.tasks)} acknowledged, {len(self.tasks) - len(pending)} completed, "
            f"{len(pending)} lost",
            f"  errors              {sum(self.errors_acked.values())} acknowledged in {len(self.errors_acked)} "
            f"group(s); fleet counts exact for {exact} of {len(self.errors_acked)}",
        ]
        self.say("\n".join(lines))
        ok = not pending and exact == len(self.errors_acked) and (self.n == 1 or k.get("takeover_s") is not None)
        self.say("  result              " + ("nothing lost" if ok else "SOMETHING WAS LOST (see above)"))
        return 0 if ok else 1

    async def _stop_all(self) -> None:
        for w in self.workers:
            with contextlib.suppress(ProcessLookupError):
                w.terminate()
        for m in self.members:
            if m["alive"]:
                with contextlib.suppress(ProcessLookupError):
                    m["proc"].terminate()
        for p in [*self.workers, *(m["proc"] for m in self.members)]:
            try:
                async with asyncio.timeout(15):
                    await p.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()


def _redact(url: str) -> str:
    head, _, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    return f"{head}://{creds.split(':', 1)[0]}@{host}" if at else url


def run_fleet_demo(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(FleetDemo(args).run())
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
