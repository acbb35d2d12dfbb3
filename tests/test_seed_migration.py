"""Migrating from the seed code (SPEC 11): a seed coordinator keeps its own order of things."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from coordinator_plugins.error_handling import (
    ERROR_HANDLING_KEY,
    EnhancedErrorHandlingIntegration,
    install_enhanced_error_handling,
)
from coordinator_plugins.error_handling.web.openapi import document
from tests.strategies_for_tests import SeedShapedCoordinator


class SeedOrderCoordinator(SeedShapedCoordinator):
    """Installs error handling in ``__init__`` (catching everything, as the seed did) and creates
    its aiohttp app later, in ``start``, with routes of its own."""

    def __init__(self, db_path: str, eh_path: str) -> None:
        super().__init__(duckdb.connect(db_path), db_path)
        self.app: web.Application | None = None
        self.enhanced_error_handling: Any = None
        try:
            self.enhanced_error_handling = install_enhanced_error_handling(
                self, {"database": eh_path, "escalation_backoff": 0, "auto_recover": False}
            )
        except Exception:  # the seed coordinator swallowed this, leaving the plugin silently off
            self.enhanced_error_handling = None

    def build_app(self) -> web.Application:
        self.app = web.Application()
        self.app.router.add_get("/status", self.status)
        return self.app

    async def status(self, request: web.Request) -> web.Response:
        integ = self.enhanced_error_handling
        return web.json_response({"errors": (await integ.get_error_metrics())["total_errors"]})


async def test_install_before_the_app_exists_mounts_everything_once_it_does(tmp_path: Path) -> None:
    coord = SeedOrderCoordinator(str(tmp_path / "seed.duckdb"), str(tmp_path / "eh.duckdb"))
    integ = coord.enhanced_error_handling
    assert isinstance(integ, EnhancedErrorHandlingIntegration) and integ.app is None
    fired: list[str] = []
    integ.register_error_hook("network", lambda report: fired.append(report.error_id))
    coord.add_worker("w1")
    coord.add_worker("w2")
    coord.tasks = {"t1": {"status": "running"}, "t2": {"status": "running"}}
    coord.running_tasks = {"t1": "w1", "t2": "w2"}
    app = coord.build_app()
    assert app[ERROR_HANDLING_KEY] is integ and integ.app is app
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    for path in document("/api")["paths"]:
        assert "/api" + path in paths or path in paths, path
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            base = str(server.make_url("")).rstrip("/")
            async with session.post(base + "/api/errors", json={
                "message": "worker w1 connection lost", "component": "worker", "worker_id": "w1",
                "exception_type": "ConnectionResetError"}) as r:
                assert r.status == 202, await r.text()
                error_id = (await r.json())["error_id"]
            async with session.get(base + "/status") as r:
                assert r.status == 200 and (await r.json())["errors"] == 1
        assert fired == [error_id]
        ok, info = await integ.handle_error("worker w1 connection lost", {"component": "worker", "worker_id": "w1"})
        assert ok and info["strategy_id"] == "worker", info
        assert coord.pending_tasks == {"t1"} and coord.running_tasks == {"t2": "w2"}
    finally:
        await server.close()


async def test_attach_by_hand_and_its_refusals(tmp_path: Path) -> None:
    class NoApp:
        __slots__ = ("enhanced_error_handling",)

    holder = NoApp()
    integ = install_enhanced_error_handling(holder, {"database": str(tmp_path / "eh.duckdb")})
    assert holder.enhanced_error_handling is integ and integ.app is None
    app = web.Application()
    assert integ.attach(app) is integ and app[ERROR_HANDLING_KEY] is integ
    with pytest.raises(RuntimeError, match="already set up on this app"):
        integ.attach(app)
    with pytest.raises(RuntimeError, match="already attached"):
        integ.attach(web.Application())
    with pytest.raises(ValueError, match="coordinator.app: expected an aiohttp.web.Application or None"):
        install_enhanced_error_handling(type("C", (), {"app": "nope"})())


async def test_the_design_example_of_adding_a_strategy(tmp_path: Path) -> None:
    from tests.strategies_for_tests import AlwaysWorks

    integ = EnhancedErrorHandlingIntegration(None, {"database": str(tmp_path / "eh.duckdb"), "auto_recover": False})
    integ.recovery_manager.add_custom_strategy("always", AlwaysWorks(None))
    assert list(integ.recovery_manager.strategies)[-1] == "always"
    with pytest.raises(ValueError, match="'worker' is a built-in strategy id"):
        integ.recovery_manager.add_custom_strategy("worker", AlwaysWorks(None))
