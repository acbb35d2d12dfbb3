"""Migrating from the seed code (SPEC 11): a seed coordinator keeps its own order of things."""

from __future__ import annotations

import types
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
    RecoveryLevel,
    RecoveryStrategy,
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



# -- the seed's context keys: related_entities and the priority flags (issue 17, finding 4) --------------
class Recorder(RecoveryStrategy):
    """Records what recovery gave it; succeeds (it is the test's probe, not a fix)."""

    def __init__(self, coordinator: Any) -> None:
        super().__init__(coordinator, "recorder", RecoveryLevel.LOW)
        self.seen: list[dict[str, Any]] = []

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        self.seen.append({k: error_info.get(k) for k in ("worker_id", "worker_ids", "task_id", "task_ids")})
        return True


async def test_a_worker_named_only_in_related_entities_is_the_one_recovered(tmp_path: Path) -> None:
    coord = SeedShapedCoordinator()
    for w in ("w1", "w2"):
        coord.add_worker(w)
    coord.tasks = {"t1": {"status": "running"}, "t2": {"status": "running"}}
    coord.running_tasks = {"t1": "w1", "t2": "w2"}
    integ = EnhancedErrorHandlingIntegration(coord, {"database": str(tmp_path / "eh.duckdb"), "auto_recover": False,
                                                     "escalation_backoff": 0, "builtin_strategies": ["worker"]})
    await integ.start()
    try:
        ok, info = await integ.handle_error(ConnectionResetError("worker connection lost"), {
            "component": "worker", "operation": "heartbeat", "related_entities": {"worker_id": "w1"}})
        assert ok and info["strategy_id"] == "worker", info
        assert coord.pending_tasks == {"t1"} and coord.running_tasks == {"t2": "w2"}
        assert coord.workers["w2"]["status"] == "active" and coord.reconnects == 1
    finally:
        await integ.stop()


@pytest.mark.parametrize(("related", "workers", "tasks"), [
    ({"worker_id": "w1"}, ["w1"], []),
    ({"task_id": "t1"}, [], ["t1"]),
    ({"task_id": ["t1", "t2"]}, [], ["t1", "t2"]),
    ({"task_ids": ["t1", "t2"], "task_id": "t0"}, [], ["t0", "t1", "t2"]),
    ({"task_ids": "t3", "worker_ids": ["w1", "w2"], "test_id": "x"}, ["w1", "w2"], ["t3"]),
    ({"task_ids": [7, None, "", "t7"]}, [], ["7", "t7"]),
    (types.SimpleNamespace(worker_id="w9", task_ids=["t9"]), ["w9"], ["t9"]),  # the seed read attributes too
    ({}, [], []),
])
async def test_every_shape_of_related_entities_names_targets(tmp_path: Path, related: Any, workers: list[str],
                                                            tasks: list[str]) -> None:
    integ = EnhancedErrorHandlingIntegration(None, {"database": str(tmp_path / "eh.duckdb"), "auto_recover": False,
                                                    "builtin_strategies": []})
    probe = Recorder(None)
    integ.add_custom_strategy("probe", probe)
    await integ.start()
    try:
        ok, _ = await integ.handle_error("it broke", {"component": "scheduler", "related_entities": related})
        assert ok
        assert probe.seen[-1]["worker_ids"] == workers and probe.seen[-1]["task_ids"] == tasks
        assert probe.seen[-1]["worker_id"] == (workers[-1] if workers else None)
        # an explicit worker_id comes first; related_entities adds the others
        ok, _ = await integ.handle_error("it broke again", {"component": "scheduler", "worker_id": "w0",
                                                            "related_entities": related})
        assert probe.seen[-1]["worker_ids"] == ["w0", *[w for w in workers if w != "w0"]]
    finally:
        await integ.stop()


@pytest.mark.parametrize(("flags", "severity"), [
    ({"high_priority": True}, "high"),
    ({"critical": True}, "critical"),
    ({"low_priority": True}, "low"),
    ({"critical": True, "high_priority": True}, "critical"),
    ({"high_priority": "yes"}, "high"),
    ({"high_priority": False}, "medium"),
    ({"high_priority": True, "severity": "info"}, "info"),  # an explicit severity wins
])
async def test_the_seed_priority_flags_set_the_severity(tmp_path: Path, flags: dict[str, Any], severity: str) -> None:
    integ = EnhancedErrorHandlingIntegration(None, {"database": str(tmp_path / "eh.duckdb"), "auto_recover": False})
    await integ.start()
    try:
        report = await integ.report_error(ConnectionResetError("peer reset"), {"component": "api", **flags})
        assert report.error_severity.value == severity
    finally:
        await integ.stop()


async def test_a_high_priority_occurrence_raises_its_group_and_bad_values_are_refused(tmp_path: Path) -> None:
    integ = EnhancedErrorHandlingIntegration(None, {"database": str(tmp_path / "eh.duckdb"), "auto_recover": False})
    await integ.start()
    try:
        first = await integ.report_error(ConnectionResetError("peer reset"), {"component": "api"})
        assert first.error_severity.value == "medium"
        again = await integ.report_error(ConnectionResetError("peer reset"), {"component": "api", "high_priority": 1})
        assert again.error_id == first.error_id and again.error_severity.value == "high"
        with pytest.raises(ValueError, match=r"context\.high_priority: expected true or false"):
            await integ.report_error("x", {"component": "api", "high_priority": {"yes": 1}})
        with pytest.raises(ValueError, match=r"context\.related_entities: expected a dict"):
            await integ.report_error("x", {"component": "api", "related_entities": "w1"})
    finally:
        await integ.stop()
