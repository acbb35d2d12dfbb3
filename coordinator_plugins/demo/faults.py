"""Real faults injected into a running farm: processes killed or frozen, broken connections,
stopped loops, network errors, and bursts of one error from many hosts."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from coordinator_plugins.demo.kinds import FAULT_KINDS
from coordinator_plugins.reference.coordinator import Coordinator
from coordinator_plugins.reference.worker import WEDGE_ENV

logger = logging.getLogger(__name__)

# What a fault did, and what it hit: {"worker": id}, {"error_id": id} or {"component": name}.
Injected = tuple[str, dict[str, str]]


class FaultInjector:
    def __init__(self, coord: Coordinator, integ: Any, url: str, kinds: list[str], rng: random.Random,
                 on_fault: Callable[[str, str, dict[str, str]], None],
                 session: aiohttp.ClientSession | None = None, wedge_dir: Path | None = None) -> None:
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(
                f"--faults: unknown kind(s) {', '.join(sorted(unknown))}; accepted: {', '.join(FAULT_KINDS)}")
        self.coord = coord
        self.integ = integ
        self.url = url
        self.kinds = kinds
        self.rng = rng
        self.on_fault = on_fault
        self.session = session  # the farm's HTTP client (with the coordinator's token), for HTTP faults
        self.counts: dict[str, int] = {}
        self.wedge_dir = wedge_dir
        if "rehang" in kinds:
            if wedge_dir is None:
                raise ValueError("--faults rehang: needs a directory for the wedged workers' state")
            wedge_dir.mkdir(parents=True, exist_ok=True)
            # The workers launched from now on (restarts too) look there when they start.
            coord.launcher.env = {**(coord.launcher.env or os.environ), WEDGE_ENV: str(wedge_dir)}

    async def inject(self) -> None:
        if not self.kinds:
            return
        kind = self.rng.choice(self.kinds)
        injected: Injected | None = await getattr(self, f"_{kind}")()
        if injected:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.on_fault(kind, *injected)

    def _live_workers(self) -> list[str]:
        return [w for w in self.coord.launcher.procs if self.coord.launcher.running(w)
                and self.coord.workers.get(w) is not None and self.coord.workers[w].status == "active"]

    async def _kill(self) -> Injected | None:
        live = self._live_workers()
        if len(live) < 2:
            return None
        victim = self.rng.choice(live)
        await self.coord.launcher.kill(victim)
        return f"SIGKILL worker {victim}", {"worker": victim}

    async def _hang(self) -> Injected | None:
        live = self._live_workers()
        if len(live) < 2:
            return None
        victim = self.rng.choice(live)
        await self.coord.launcher.signal(victim, signal.SIGSTOP)  # frozen: no heartbeats, no progress
        return f"SIGSTOP worker {victim} (hung)", {"worker": victim}

    async def _rehang(self) -> Injected | None:
        """Wedge a worker's local state, then freeze it: restarted under the same id it hangs
        again within a second of registering; only a replacement (a new id) serves for good."""
        live = self._live_workers()
        if len(live) < 2 or self.wedge_dir is None:
            return None
        victim = self.rng.choice(live)
        (self.wedge_dir / victim).write_text("wedged\n", encoding="utf-8")
        await self.coord.launcher.signal(victim, signal.SIGSTOP)
        return f"SIGSTOP worker {victim}, its local state wedged (hangs again after a restart)", {"worker": victim}

    async def _probe(self) -> bool:
        assert self.session is not None
        async with self.session.get(self.url + "/api/status", timeout=aiohttp.ClientTimeout(total=5)) as r:
            return r.status == 200

    async def _network(self) -> Injected | None:
        live = self._live_workers() or ["worker-1"]
        worker = self.rng.choice(live)
        port = self.rng.randrange(30000, 60000)
        exc = ConnectionResetError(104, f"Connection reset by peer while posting a result to 127.0.0.1:{port}")
        report = await self.integ.report_error(exc, {"component": "worker", "operation": "post_result",
                                                     "worker_id": worker, "callable": self._probe})
        return f"network error on worker {worker}'s report", {"error_id": report.error_id}

    async def _database(self) -> Injected | None:
        self.coord.db.break_connection()
        return "coordinator database connection broken", {"component": "database"}

    async def _scheduler(self) -> Injected | None:
        if not await self.coord.component_healthy("scheduler"):
            return None
        await self.coord.stop_component("scheduler")
        return "scheduler loop stopped", {"component": "scheduler"}

    async def _burst(self) -> Injected | None:
        assert self.session is not None
        n = self.rng.randrange(20, 60)
        body = {"message": "CPU overload on shared runner host: load average 48.2", "component": "runner-host",
                "operation": "execute_tests", "error_type": "system", "hardware_id": "host-a"}
        posts = [self.session.post(self.url + "/api/errors", json={**body, "metadata": {"reporter": f"r{i}"}})
                 for i in range(n)]
        answers = [await coro for coro in asyncio.as_completed([self._send(p) for p in posts])]
        ids = {a["error_id"] for a in answers if a}
        target = {"error_id": ids.pop()} if len(ids) == 1 else {"component": body["component"]}
        return f"burst of {n} identical reports ({len([a for a in answers if a])} acknowledged)", target

    async def _send(self, request: Any) -> dict[str, Any] | None:
        """The 202's body, or None when the report was not acknowledged."""
        try:
            async with request as r:
                body = await r.json(content_type=None)
                return body if r.status == 202 and isinstance(body, dict) else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
