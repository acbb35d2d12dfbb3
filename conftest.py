"""Shared fixtures: a real reference coordinator on an ephemeral port with the plugin enabled,
real worker processes, and DuckDB files in a temporary directory. Nothing is mocked."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from coordinator_plugins.error_handling import ERROR_HANDLING_KEY, EnhancedErrorHandlingIntegration
from coordinator_plugins.reference import COORDINATOR_KEY, Coordinator, build_app

ROOT = Path(__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


@dataclass
class Farm:
    app: web.Application
    server: TestServer
    coord: Coordinator
    integ: EnhancedErrorHandlingIntegration | None
    session: aiohttp.ClientSession
    tmp: Path

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.session.get(self.url + path, **kw) as r:
            return r.status, await r.json(content_type=None)

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        if body is not None:
            kw["json"] = body
        async with self.session.post(self.url + path, **kw) as r:
            return r.status, await r.json(content_type=None)

    async def submit(self, **spec: Any) -> str:
        status, data = await self.post("/api/tasks", {"kind": "sim", **spec})
        assert status == 201, data
        return str(data["task_id"])

    async def start_workers(self, n: int, prefix: str = "worker") -> list[str]:
        ids = await self.coord.launch_workers(n, prefix)
        await wait_for(lambda: all(w in self.coord.workers and self.coord.workers[w].status == "active" for w in ids),
                       20, f"workers {ids} registered")
        return ids


async def wait_for(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def farm_config(tmp: Path, plugin: dict[str, Any] | None = None, coordinator: dict[str, Any] | None = None,
                enabled: bool = True) -> dict[str, Any]:
    coord = {"host": "127.0.0.1", "port": 0, "heartbeat_interval": 0.2, "heartbeat_timeout": 1.5,
             "scheduler_interval": 0.1, "database": str(tmp / "coordinator.duckdb")}
    coord.update(coordinator or {})
    eh = {"database": str(tmp / "errors.duckdb"), "escalation_backoff": 0.0, "default_timeout": 10.0}
    eh.update(plugin or {})
    cfg: dict[str, Any] = {"coordinator": coord}
    if enabled:
        cfg["plugins"] = {"enabled": ["error_handling"], "error_handling": eh}
    return cfg


@pytest.fixture
async def make_farm(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    farms: list[Farm] = []

    async def make(plugin: dict[str, Any] | None = None, coordinator: dict[str, Any] | None = None,
                   workers: int = 0, enabled: bool = True) -> Farm:
        cfg = farm_config(tmp_path, plugin, coordinator, enabled)
        app = build_app(cfg)
        coord = app[COORDINATOR_KEY]
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        coord.url = str(server.make_url("")).rstrip("/")
        coord.launcher.url = coord.url
        farm = Farm(app, server, coord, app.get(ERROR_HANDLING_KEY), aiohttp.ClientSession(), tmp_path)
        farms.append(farm)
        if workers:
            await farm.start_workers(workers)
        return farm

    yield make
    for farm in farms:
        await farm.session.close()
        await farm.server.close()
        for wid, proc in farm.coord.launcher.procs.items():
            assert proc.returncode is not None, f"worker {wid} (pid {proc.pid}) left running"

from tests.pg_harness import pg_url, pg_url_sync  # noqa: E402,F401  (fixtures: a real PostgreSQL database per test)
