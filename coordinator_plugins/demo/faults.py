"""Real faults injected into a running farm: processes killed or frozen, broken connections,
stopped loops, network errors, and bursts of one error from many hosts."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from collections.abc import Callable
from typing import Any

import aiohttp

from coordinator_plugins.reference.coordinator import Coordinator

logger = logging.getLogger(__name__)

FAULT_KINDS = ("kill", "hang", "network", "database", "scheduler", "burst")


class FaultInjector:
    def __init__(self, coord: Coordinator, integ: Any, url: str, kinds: list[str], rng: random.Random,
                 on_fault: Callable[[str, str], None]) -> None:
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
        self.session: aiohttp.ClientSession | None = None
        self.counts: dict[str, int] = {}

    async def inject(self) -> None:
        if not self.kinds:
            return
        kind = self.rng.choice(self.kinds)
        detail = await getattr(self, f"_{kind}")()
        if detail:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.on_fault(kind, detail)

    def _live_workers(self) -> list[str]:
        return [w for w in self.coord.launcher.procs if self.coord.launcher.running(w)
                and self.coord.workers.get(w) is not None and self.coord.workers[w].status == "active"]

    async def _kill(self) -> str:
        live = self._live_workers()
        if len(live) < 2:
            return ""
        victim = self.rng.choice(live)
        await self.coord.launcher.kill(victim)
        return f"SIGKILL worker {victim}"

    async def _hang(self) -> str:
        live = self._live_workers()
        if len(live) < 2:
            return ""
        victim = self.rng.choice(live)
        await self.coord.launcher.signal(victim, signal.SIGSTOP)  # frozen: no heartbeats, no progress
        return f"SIGSTOP worker {victim} (hung)"

    async def _probe(self) -> bool:
        assert self.session is not None
        async with self.session.get(self.url + "/api/status", timeout=aiohttp.ClientTimeout(total=5)) as r:
            return r.status == 200

    async def _network(self) -> str:
        live = self._live_workers() or ["worker-1"]
        worker = self.rng.choice(live)
        port = self.rng.randrange(30000, 60000)
        exc = ConnectionResetError(104, f"Connection reset by peer while posting a result to 127.0.0.1:{port}")
        await self.integ.report_error(exc, {"component": "worker", "operation": "post_result", "worker_id": worker,
                                            "callable": self._probe})
        return f"network error on worker {worker}'s report"

    async def _database(self) -> str:
        self.coord.db.break_connection()
        return "coordinator database connection broken"

    async def _scheduler(self) -> str:
        if not await self.coord.component_healthy("scheduler"):
            return ""
        await self.coord.stop_component("scheduler")
        return "scheduler loop stopped"

    async def _burst(self) -> str:
        assert self.session is not None
        n = self.rng.randrange(20, 60)
        body = {"message": "CPU overload on shared runner host: load average 48.2", "component": "runner-host",
                "operation": "execute_tests", "error_type": "system", "hardware_id": "host-a"}
        posts = [self.session.post(self.url + "/api/errors", json={**body, "metadata": {"reporter": f"r{i}"}})
                 for i in range(n)]
        statuses = []
        for coro in asyncio.as_completed([self._send(p) for p in posts]):
            statuses.append(await coro)
        return f"burst of {n} identical reports ({sum(1 for s in statuses if s == 202)} acknowledged)"

    async def _send(self, request: Any) -> int:
        try:
            async with request as r:
                await r.read()
                return int(r.status)
        except (aiohttp.ClientError, TimeoutError):
            return 0
