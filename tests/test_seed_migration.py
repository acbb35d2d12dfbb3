"""Migrating from the seed code (SPEC 11): a seed coordinator keeps its own order of things."""

from __future__ import annotations

import asyncio
import inspect
import random
import types
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from coordinator_plugins.error_handling import (
    ERROR_HANDLING_KEY,
    DuckDBStore,
    EnhancedErrorHandlingIntegration,
    ErrorContext,
    ErrorReport,
    ErrorSeverity,
    ErrorType,
    RecoveryLevel,
    RecoveryStrategy,
    RetryPolicy,
    install_enhanced_error_handling,
    setup,
)
from coordinator_plugins.error_handling.seed import convert_seed
from coordinator_plugins.error_handling.storage import StoreUnavailable
from coordinator_plugins.error_handling.storage.duckdb.migrations import CURRENT_VERSION
from coordinator_plugins.error_handling.storage.duckdb.schema import SCHEMA
from coordinator_plugins.error_handling.storage.duckdb.seed import is_seed_database, migrate_seed_database
from coordinator_plugins.error_handling.web.openapi import document
from tests.seed_database import FLAKY, PERFORMANCE_TABLES, build_seed_database
from tests.strategies_for_tests import SeedShapedCoordinator


class SeedOrderCoordinator(SeedShapedCoordinator):
    """Installs error handling in ``__init__`` (catching everything, as the seed did) and creates
    its aiohttp app later, in ``start``, with routes of its own: its status handler as the seed
    wrote it, and the same handler migrated (``await`` added, the one change it needs)."""

    def __init__(self, db_path: str, eh_path: str) -> None:
        super().__init__(duckdb.connect(db_path), db_path)
        self.app: web.Application | None = None
        self.enhanced_error_handling: Any = None
        self.scheduler: asyncio.Task[None] | None = None
        try:
            self.enhanced_error_handling = install_enhanced_error_handling(
                self, {"database": eh_path, "escalation_backoff": 0, "auto_recover": False}
            )
        except Exception:  # the seed coordinator swallowed this, leaving the plugin silently off
            self.enhanced_error_handling = None

    def build_app(self) -> web.Application:
        self.app = web.Application()
        self.app.router.add_get("/status", self.handle_status)
        self.app.router.add_get("/status-unmigrated", self.handle_status_unmigrated)
        return self.app

    async def run_scheduler(self) -> None:
        """The seed's scheduler, reduced: pending tasks run and complete."""
        while True:
            for tid in list(self.pending_tasks):
                self.pending_tasks.discard(tid)
                self.tasks[tid]["status"] = "completed"
            await asyncio.sleep(0.02)

    def _status_of(self, metrics: Any, error_metrics: Any) -> dict[str, Any]:
        return {
            "total_errors": error_metrics.get("total_errors", 0),
            "unresolved_errors": error_metrics.get("unresolved_errors", 0),
            "recovery_strategies": len(metrics.get("strategies", {})),
            "recovery_executions": metrics.get("overall", {}).get("total_executions", 0),
            "success_rate": metrics.get("overall", {}).get("overall_success_rate", 0),
        }

    async def handle_status(self, request: web.Request) -> web.Response:
        status: dict[str, Any] = {"status": "ok", "workers": len(self.workers), "tasks": len(self.tasks)}
        try:
            metrics = await self.enhanced_error_handling.get_performance_metrics()
            error_metrics = await self.enhanced_error_handling.get_error_metrics()
            status["error_handling"] = self._status_of(metrics, error_metrics)
        except Exception as e:
            status["error_handling"] = {"error": str(e)}
        return web.json_response(status)

    async def handle_status_unmigrated(self, request: web.Request) -> web.Response:
        status: dict[str, Any] = {"status": "ok"}
        metrics = self.enhanced_error_handling.get_performance_metrics()
        error_metrics = self.enhanced_error_handling.get_error_metrics()
        try:
            status["error_handling"] = self._status_of(metrics, error_metrics)
        except Exception as e:
            status["error_handling"] = {"error": str(e)}
        finally:
            metrics.close()  # (the seed left them unawaited; closed here to keep the test's log clean)
            error_metrics.close()
        return web.json_response(status)


async def test_install_before_the_app_exists_mounts_everything_once_it_does(tmp_path: Path) -> None:
    coord = SeedOrderCoordinator(str(tmp_path / "seed.duckdb"), str(tmp_path / "eh.duckdb"))
    integ = coord.enhanced_error_handling
    assert isinstance(integ, EnhancedErrorHandlingIntegration) and integ.app is None
    fired: dict[str, list[str]] = {k: [] for k in ("*", "network", "db_connection", "coordinator")}
    for key, seen in fired.items():  # the seed's own four hook keys
        integ.register_error_hook(key, lambda report, seen=seen: seen.append(report.error_id))
    coord.add_worker("w1")
    coord.add_worker("w2")
    coord.tasks = {"t1": {"status": "running"}, "t2": {"status": "running"}, "t3": {"status": "failed"}}
    coord.running_tasks = {"t1": "w1", "t2": "w2"}
    coord.failed_tasks = {"t3"}
    app = coord.build_app()
    assert app[ERROR_HANDLING_KEY] is integ and integ.app is app
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    for path in document("/api")["paths"]:
        assert "/api" + path in paths or path in paths, path
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    coord.scheduler = asyncio.create_task(coord.run_scheduler())
    try:
        async with aiohttp.ClientSession() as session:
            base = str(server.make_url("")).rstrip("/")
            async with session.post(base + "/api/errors", json={
                "message": "worker w1 connection lost", "component": "worker", "worker_id": "w1",
                "exception_type": "ConnectionResetError"}) as r:
                assert r.status == 202, await r.text()
                error_id = (await r.json())["error_id"]
            for path, ops in document("/api")["paths"].items():  # every GET route answers, none with a 500
                if "{" not in path and "get" in ops:
                    async with session.get(base + path) as r:
                        assert r.status == 200, (path, r.status)
            async with session.get(base + "/status") as r:
                answer = await r.json()
                assert answer["error_handling"]["total_errors"] == 1, answer
                assert answer["error_handling"]["unresolved_errors"] == 1
            async with session.get(base + "/status-unmigrated") as r:  # the symptom of finding 5
                assert (await r.json())["error_handling"] == {"error": "'coroutine' object has no attribute 'get'"}
        await integ.error_handler.hooks.wait_idle()  # hooks run in the background
        assert fired["network"] == [error_id] and fired["*"] == [error_id]
        db_report = await integ.report_error(duckdb.ConnectionException("connection to the results db lost"),
                                             {"component": "database", "operation": "connect"})
        coord_report = await integ.report_error("scheduler loop stalled",
                                                {"component": "coordinator", "operation": "schedule"})
        await integ.error_handler.hooks.wait_idle()
        assert fired["db_connection"] == [db_report.error_id] and fired["coordinator"] == [coord_report.error_id]
        coord.workers["w1"]["last_heartbeat"] = 0.0  # lost for real: no heartbeat since (issue 27 item 1)
        ok, info = await integ.handle_error("worker w1 connection lost", {"component": "worker", "worker_id": "w1"})
        assert ok and info["strategy_id"] == "worker", info
        assert coord.running_tasks == {"t2": "w2"} and coord.tasks["t1"]["status"] == "completed"
        ok, info = await integ.handle_error(RuntimeError("test t3 failed"), {
            "component": "task", "operation": "run", "related_entities": {"task_id": "t3"}})
        assert ok and info["strategy_id"] == "retry", info
        assert coord.tasks["t3"]["status"] == "completed" and "t3" not in coord.failed_tasks
    finally:
        coord.scheduler.cancel()
        await server.close()


async def test_attach_by_hand_and_its_refusals(tmp_path: Path) -> None:
    class NoApp:
        __slots__ = ("enhanced_error_handling",)

    holder = NoApp()
    integ = install_enhanced_error_handling(holder, {"database": str(tmp_path / "eh.duckdb")})
    assert holder.enhanced_error_handling is integ and integ.app is None
    app = web.Application()
    assert integ.attach(app) is integ and app[ERROR_HANDLING_KEY] is integ
    assert integ.attach(app) is integ  # the same app again: itself (issue 28.4)
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


async def test_a_high_priority_occurrence_raises_its_group_and_bad_values_are_kept(tmp_path: Path) -> None:
    integ = EnhancedErrorHandlingIntegration(None, {"database": str(tmp_path / "eh.duckdb"), "auto_recover": False})
    await integ.start()
    try:
        first = await integ.report_error(ConnectionResetError("peer reset"), {"component": "api"})
        assert first.error_severity.value == "medium"
        again = await integ.report_error(ConnectionResetError("peer reset"), {"component": "api", "high_priority": 1})
        assert again.error_id == first.error_id and again.error_severity.value == "high"
        # issue 28: a value it cannot use is kept in metadata, never raised
        odd = await integ.report_error("x", {"component": "api", "high_priority": {"yes": 1}, "related_entities": "w1"})
        assert odd.error_severity.value != "high" and odd.target_workers == []
        assert odd.context.metadata["unrecognized_context"] == {"high_priority": {"yes": 1}, "related_entities": "w1"}
    finally:
        await integ.stop()

# -- a database file the seed code wrote (issue 17, finding 3) -------------------------------------------
class Served:
    """A plain aiohttp app with the plugin set up by ``setup()``, served on an ephemeral port."""

    def __init__(self, path: str, **config: Any) -> None:
        self.app = web.Application()
        self.integ = setup(self.app, None, {"database": path, "auto_recover": False, **config})
        self.server = TestServer(self.app, host="127.0.0.1")
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Served:
        await self.server.start_server()
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.session is not None
        await self.session.close()
        await self.server.close()

    async def get(self, path: str) -> Any:
        assert self.session is not None
        async with self.session.get(str(self.server.make_url(path))) as r:
            assert r.status == 200, (path, r.status, await r.text())
            return await r.json()

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        assert self.session is not None
        async with self.session.post(str(self.server.make_url(path)), json=body) as r:
            return r.status, await r.json()


V1_TABLES = {"error_reports", "error_occurrences", "recovery_performance", "strategy_scores", "adaptive_timeouts",
             "progressive_recovery", "learner_state"}


def columns(cur: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    rows = cur.execute("SELECT table_name, column_name FROM information_schema.columns "
                       "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position").fetchall()
    out: dict[str, list[str]] = {}
    for t, c in rows:
        out.setdefault(t, []).append(c)
    return out


def tables_of(path: str) -> dict[str, list[str]]:
    con = duckdb.connect(path)
    try:
        return columns(con)
    finally:
        con.close()


def v1_layout() -> dict[str, list[str]]:
    con = duckdb.connect(":memory:")
    try:
        con.execute(SCHEMA)
        return columns(con)
    finally:
        con.close()


async def test_a_seed_written_database_opens_and_its_rows_are_served(tmp_path: Path) -> None:
    seed = build_seed_database(str(tmp_path / "seed.duckdb"))
    ids = seed.ids
    async with Served(seed.path) as s:
        # the layout is exactly version 1 (plus the coordinator's tables and the seed's schema_versions)
        layout = await s.integ.store.read(columns)
        assert {t: layout[t] for t in V1_TABLES} == v1_layout()
        assert set(layout) == V1_TABLES | {"schema_version", "worker_nodes", "schema_versions", "error_aliases",
                                           "idempotency_keys"}
        assert s.integ.store.status().schema_version == CURRENT_VERSION  # the seed migration writes 1, then the steps
        open_ids = {e["error_id"]: e for e in (await s.get("/api/errors?limit=1000"))["errors"]}
        # three seed rows of one error (aggregated by the seed) are one open group under its primary's id
        assert set(open_ids) == {ids["refused"], ids["exhausted"], ids["retrying"], ids["db"]}
        refused = open_ids[ids["refused"]]
        assert refused["aggregated_count"] == 3 and refused["resolution_status"] == "open"
        assert refused["error_type"] == "network" and refused["recovery_level"] == 3
        assert refused["error_severity"] == "high"  # the strongest of the three
        assert open_ids[ids["exhausted"]]["resolution_status"] == "failed"
        assert open_ids[ids["exhausted"]]["retry_count"] == 3
        assert open_ids[ids["retrying"]]["resolution_status"] == "retrying"
        assert open_ids[ids["db"]]["error_severity"] == "critical"
        every = {e["error_id"]: e for e in (await s.get("/api/errors?resolved=true&limit=1000"))["errors"]}
        assert set(every) == set(open_ids) | {ids["retried"], ids["manual"], ids["flaky"]}
        retried = every[ids["retried"]]
        assert retried["resolution_status"] == "resolved" and retried["retry_count"] == 2
        assert retried["resolution_strategy"] == "retry" and retried["recovery_level"] == 1
        one = await s.get(f"/api/errors/{ids['refused']}")
        assert one["worker_id"] == "w1" and one["current_recovery_level"] == 3
        assert [h["old_level"] for h in one["recovery_history"]] == [1, 2]
        merged = one["recovery_details"]["seed_migration"]["merged_error_ids"]
        assert merged == sorted([ids["refused_2"], ids["refused_3"]])
        for folded in merged:  # folded into the group: not groups of their own, but they answer for it
            assert (await s.get(f"/api/errors/{folded}"))["error_id"] == ids["refused"]
        manual = await s.get(f"/api/errors/{ids['manual']}")
        assert manual["recovery_details"]["manual_resolution"] == {"details": {"by": "ops"}}
        assert manual["resolution_strategy"] == "fixed the config"
        # a level whose error the seed never persisted is kept
        orphan = await s.get(f"/api/recovery/history?error_id={ids['orphan_level']}")
        assert orphan["current_level"] == 4 and len(orphan["history"]) == 3
        # the recorded performance: metrics over the last 30 days, evidence and timeouts from all of it
        metrics = await s.get("/api/recovery/metrics")
        strategies = metrics["strategies"]
        assert strategies["retry"]["total_executions"] == 10 and strategies["retry"]["successes"] == 2
        assert strategies["worker"]["total_executions"] == 9 and strategies["worker"]["timeouts"] == 1
        assert strategies["database"]["total_executions"] == 2
        assert metrics["overall"]["total_executions"] == seed.performance_rows - 1
        assert metrics["top_strategies"]["network"]["strategy_id"] == "worker"
        learned = (await s.get("/api/recovery/strategies?error_type=network"))["error_types"]["network"]
        by_id = {e["strategy_id"]: e for e in learned["strategies"]}
        assert by_id["retry"]["samples"] == 11 and by_id["retry"]["success_rate"] == pytest.approx(3 / 11)
        assert by_id["worker"]["samples"] == 9 and by_id["worker"]["success_rate"] == pytest.approx(8 / 9)
        assert by_id["worker"]["timeout"] == pytest.approx(45.0)  # the seed's, until this plugin measures its own
        # the replayed runs are the adaptive policy's evidence, and so where a new group starts
        assert learned["evidence"]["runs"] == 20 and learned["first_choice"]
        coordination = (await s.get("/api/recovery/strategies?error_type=coordination"))["error_types"]
        entry = {e["strategy_id"]: e for e in coordination["coordination"]["strategies"]}["coordinator"]
        assert entry["samples"] == 8 and entry["success_rate"] == pytest.approx(0.75)
        assert entry["timeout"] == pytest.approx(67.5)  # the seed's timeout, kept
        database = {e["strategy_id"]: e for e in (await s.get("/api/recovery/strategies?error_type=database"))[
            "error_types"]["database"]["strategies"]}["database"]
        assert database["timeout"] == pytest.approx(4.5)  # SRTT 1.5 + 4 x RTTVAR 0.75
        diag = await s.get("/api/diagnostics")
        report = diag["database"]["seed_migration"]
        assert report["skipped"] == {"recovery_performance": 1, "error_relations": 1, "progressive_recovery": 1}
        assert report["merged_errors"] == 6 and report["open_groups"] == 4 and report["aliases"] == 6
        # a new occurrence of the migrated open error joins its group
        again = await s.integ.report_error(ConnectionRefusedError(111, "Connection refused"),
                                           {"component": "worker", "operation": "heartbeat",
                                            "related_entities": {"worker_id": "w1"}})
        assert again.error_id == ids["refused"] and again.aggregated_count == 4 and not again.new_group
        status, body = await s.post("/api/errors", {"message": "Connection to the results database lost",
                                                    "component": "database", "operation": "connect",
                                                    "exception_type": "ConnectionError"})
        assert status == 202 and body["error_id"] == ids["db"] and body["aggregated_count"] == 2
    con = duckdb.connect(seed.path)
    try:  # the coordinator's own tables are untouched
        assert con.execute("SELECT * FROM worker_nodes").fetchall() == [("w1", "rack1-node3", "active")]
        assert con.execute("SELECT count(*) FROM schema_versions").fetchone() == (1,)
    finally:
        con.close()
    # opened again: nothing left to migrate, and everything as it was
    async with Served(seed.path) as s:
        assert s.integ.store.seed_migration is None
        refused = await s.get(f"/api/errors/{ids['refused']}")
        assert refused["aggregated_count"] == 4 and refused["current_recovery_level"] == 3
        assert (await s.get("/api/errors/" + ids["db"]))["aggregated_count"] == 2


async def test_a_seed_database_with_only_the_performance_tables(tmp_path: Path) -> None:
    """The seed's integration gave its database to the performance tracker only: no error rows."""
    seed = build_seed_database(str(tmp_path / "seed.duckdb"), PERFORMANCE_TABLES)
    async with Served(seed.path) as s:
        assert (await s.get("/api/errors"))["errors"] == []
        assert (await s.get("/api/recovery/metrics"))["overall"]["total_executions"] == seed.performance_rows - 1
        hist = await s.get(f"/api/recovery/history?error_id={seed.ids['refused']}")
        assert hist["current_level"] == 3
        # an error with that id arriving now is a new group of its own: levels are kept by id only
        assert s.integ.store.seed_migration["read"]["recovery_performance"] == seed.performance_rows + 1


async def test_an_empty_seed_database_opens(tmp_path: Path) -> None:
    seed = build_seed_database(str(tmp_path / "seed.duckdb"), rows=False)
    async with Served(seed.path) as s:
        assert (await s.get("/api/errors"))["errors"] == []
        report = await s.integ.report_error(ConnectionResetError("reset"), {"component": "worker"})
        assert (await s.get(f"/api/errors/{report.error_id}"))["aggregated_count"] == 1
    layout = tables_of(seed.path)
    assert {t: layout[t] for t in V1_TABLES} == v1_layout()


async def test_what_cannot_be_migrated_is_skipped_counted_and_never_fatal(tmp_path: Path) -> None:
    path = str(tmp_path / "seed.duckdb")
    build_seed_database(path, rows=False)
    con = duckdb.connect(path)
    try:
        deep = "[" * 3000 + "]" * 3000  # valid JSON to DuckDB, too deep for Python's parser
        con.execute("INSERT INTO error_reports (error_id, message, component, timestamp, aggregated_count, "
                    "resolution_status, context_data) VALUES ('err_deep', 'odd row', 'worker', ?, 2, 'open', ?)",
                    [datetime.now(), deep])
        con.execute("INSERT INTO error_reports (error_id, message, resolution_status, aggregated_count) "
                    "VALUES ('err_bare', 'no context at all', 'cosmic', -4)")
        con.execute("INSERT INTO recovery_performance (id, strategy_id, error_type, success) "
                    "VALUES (1, 'retry', 'network', true)")  # no execution_time
        con.execute("INSERT INTO recovery_performance (id, strategy_id, error_type, execution_time) "
                    "VALUES (2, 'retry', 'network', 1.0)")  # no outcome
        con.execute("INSERT INTO adaptive_timeouts VALUES ('network', 'retry', -3, NULL)")
        con.execute("INSERT INTO error_relations VALUES ('err_x', 'err_y', 'aggregated')")  # names nothing known
    finally:
        con.close()
    async with Served(path) as s:
        report = s.integ.store.seed_migration
        assert report["skipped"] == {"recovery_performance": 2, "adaptive_timeouts": 1, "error_relations": 1}
        assert report["repaired_values"] == 1 and len(report["skip_reasons"]) == 4
        errors = {e["error_id"]: e for e in (await s.get("/api/errors"))["errors"]}
        assert errors["err_deep"]["aggregated_count"] == 2
        assert errors["err_bare"]["aggregated_count"] == 1 and errors["err_bare"]["resolution_status"] == "open"
        assert errors["err_bare"]["component"] == "unknown"


async def test_a_failed_conversion_writes_nothing(tmp_path: Path) -> None:
    """One transaction: when writing fails, the seed's file is as it was, and the error says why."""
    seed = build_seed_database(str(tmp_path / "seed.duckdb"))
    con = duckdb.connect(seed.path)
    try:  # a table of the coordinator's that happens to have the name of one of ours, another shape
        con.execute("CREATE TABLE error_occurrences (id INTEGER, note VARCHAR)")
    finally:
        con.close()
    before = tables_of(seed.path)
    store = DuckDBStore(seed.path, seed=convert_seed)
    with pytest.raises(StoreUnavailable, match="cannot open"):
        await store.open()
    assert tables_of(seed.path) == before
    con = duckdb.connect(seed.path)
    try:
        assert con.execute("SELECT count(*) FROM error_reports").fetchone() == (seed.error_rows,)
        assert con.execute("SELECT count(*) FROM recovery_performance").fetchone() == (seed.performance_rows + 1,)
    finally:
        con.close()


async def test_a_store_given_no_seed_conversion_refuses_a_seed_file_and_says_how(tmp_path: Path) -> None:
    """The conversion is the domain's, handed to the store (open_store does it): a store built
    without one refuses a seed-written file, naming the fix, and leaves the file as it was."""
    seed = build_seed_database(str(tmp_path / "seed.duckdb"))
    before = tables_of(seed.path)
    store = DuckDBStore(seed.path)
    with pytest.raises(StoreUnavailable, match=r"written by the seed framework.*open_store\(config\)"):
        await store.open()
    assert tables_of(seed.path) == before


def test_only_seed_written_databases_are_recognised(tmp_path: Path) -> None:
    ours = duckdb.connect(str(tmp_path / "ours.duckdb"))
    try:
        ours.execute(SCHEMA)
        assert not is_seed_database(ours) and migrate_seed_database(ours, convert_seed) is None
    finally:
        ours.close()
    seed = build_seed_database(str(tmp_path / "seed.duckdb"), rows=False)
    con = seed.connect()
    try:
        assert is_seed_database(con)
        con.execute("CREATE TABLE schema_version (version INTEGER)")  # versioned: the migration chain's
        assert not is_seed_database(con)
    finally:
        con.close()
    empty = duckdb.connect(str(tmp_path / "empty.duckdb"))
    try:
        assert not is_seed_database(empty)
    finally:
        empty.close()


# -- the integration's getters (finding 5) and the answers of resolve and reset ----------------------------
ASYNC_API = ("report_error", "handle_error", "flush", "retry_operation", "get_unresolved_errors", "resolve_error",
             "get_error_metrics", "get_performance_metrics", "get_recovery_history", "get_strategy_recommendations",
             "reset_recovery_level", "reset_all_recovery_levels", "run_diagnostics")


def test_the_getters_stay_coroutine_functions() -> None:
    for name in ASYNC_API:  # SPEC 3: awaited, gathered, made tasks of, like any coroutine
        assert inspect.iscoroutinefunction(getattr(EnhancedErrorHandlingIntegration, name)), name


async def test_blocking_getters_serve_threads_and_refuse_the_event_loop(tmp_path: Path) -> None:
    async with Served(str(tmp_path / "eh.duckdb")) as s:
        integ = s.integ
        report = await integ.report_error(ConnectionResetError("peer reset"), {"component": "api"})
        metrics = await asyncio.to_thread(integ.blocking.get_error_metrics)
        assert metrics["total_errors"] == 1 and metrics["unresolved_errors"] == 1
        assert metrics["error_counts"] == {"network": 1}
        unresolved = await asyncio.to_thread(integ.blocking.get_unresolved_errors, None, "low")
        assert [e["error_id"] for e in unresolved] == [report.error_id]
        perf = await asyncio.to_thread(integ.blocking.get_performance_metrics, "network", None, 7)
        assert perf["overall"]["total_executions"] == 0
        assert await asyncio.to_thread(integ.blocking.get_recovery_history, report.error_id) == {
            "error_id": report.error_id, "current_level": 1, "history": []}
        assert (await asyncio.to_thread(integ.blocking.run_diagnostics))["status"] == "healthy"
        assert await asyncio.to_thread(integ.blocking.resolve_error, report.error_id, "cable replaced")
        assert await asyncio.to_thread(integ.blocking.reset_all_recovery_levels) == 0
        with pytest.raises(RuntimeError, match=r"write `await integration\.get_error_metrics\(\.\.\.\)`"):
            integ.blocking.get_error_metrics()  # on the event loop's own thread it would wait for itself
    with pytest.raises(RuntimeError, match="not running"):
        integ.blocking.get_error_metrics()


async def test_resolve_and_reset_answer_with_the_seed_fields_too(tmp_path: Path) -> None:
    async with Served(str(tmp_path / "eh.duckdb")) as s:
        report = await s.integ.report_error(ConnectionResetError("peer reset"), {"component": "api"})
        eid = report.error_id
        status, body = await s.post(f"/api/errors/{eid}/resolve", {"resolution": "cable replaced"})
        assert status == 200 and body == {"error_id": eid, "resolution_status": "resolved", "already_resolved": False,
                                          "status": "success", "message": f"error {eid} is now resolved"}
        status, body = await s.post(f"/api/errors/{eid}/resolve")
        assert body["already_resolved"] is True and body["status"] == "success"
        assert body["message"] == f"error {eid} was already resolved"
        status, body = await s.post("/api/errors/err_unknown/resolve")
        assert status == 404 and set(body) == {"error", "code"}
        s.integ.recovery_manager.state(eid).level = 3
        status, body = await s.post("/api/recovery/reset", {"error_id": eid})
        assert status == 200 and body == {"reset": 1, "status": "success",
                                          "message": f"recovery level of error {eid} reset to 1"}
        status, body = await s.post("/api/recovery/reset")
        assert status == 200 and body["reset"] == 1 and body["status"] == "success"
        status, body = await s.post("/api/recovery/reset", {"error_id": "err_unknown"})
        assert status == 404  # ours: the seed answered success for an unknown id


# -- the seed's RetryPolicy, as seed code constructs and calls it ------------------------------------------
def test_a_retry_policy_built_the_seed_way() -> None:
    policy = RetryPolicy(max_retries=3, initial_delay_ms=100, backoff_factor=2.0, jitter=True,
                         retry_on_error_types=["network", ErrorType.TIMEOUT], skip_on_error_types=None,
                         skip_if_severity_above="critical")
    assert policy.jitter == 0.25 and policy.skip_on_error_types == set()
    assert policy.retry_on_error_types == {ErrorType.NETWORK, ErrorType.TIMEOUT}
    assert policy.skip_if_severity_above is ErrorSeverity.CRITICAL
    rng = random.Random(3)
    delays = [policy.get_delay_ms(n, rng) for n in range(3) for _ in range(200)]
    assert min(delays[:200]) >= 75 and max(delays[:200]) <= 125  # the seed's 75% to 125%
    assert min(delays[400:]) >= 300 and max(delays[400:]) <= 500
    report = ErrorReport("e", ErrorType.NETWORK, ErrorSeverity.HIGH, "m", ErrorContext())
    assert policy.should_retry(report)  # the seed's one-argument call: the report's next retry
    report.retry_count = 3
    assert not policy.should_retry(report)
    report.retry_count, report.error_type = 0, ErrorType.DATABASE
    assert not policy.should_retry(report)
    assert policy.to_dict() == {"max_retries": 3, "initial_delay_ms": 100, "max_delay_ms": 30000,
                                "backoff_factor": 2.0, "jitter": 0.25, "retry_on_error_types": ["network", "timeout"],
                                "skip_on_error_types": None, "skip_if_severity_above": "critical"}
    assert RetryPolicy(jitter=False).jitter is False and RetryPolicy(jitter=False).get_delay_ms(2) == 2000
    assert RetryPolicy(jitter=False).to_dict()["jitter"] is False  # as the seed kept it (issue 29)
    with pytest.raises(ValueError, match=r"RetryPolicy\.retry_on_error_types: 'netwrk' is not one of"):
        RetryPolicy(retry_on_error_types=["netwrk"])
    with pytest.raises(ValueError, match=r"RetryPolicy\.skip_if_severity_above"):
        RetryPolicy(skip_if_severity_above="dire")


async def test_retry_operation_under_a_seed_policy(tmp_path: Path) -> None:
    integ = EnhancedErrorHandlingIntegration(None, {"database": str(tmp_path / "eh.duckdb"), "auto_recover": False})
    integ.error_handler.set_retry_policy("db", RetryPolicy(max_retries=2, initial_delay_ms=1, max_delay_ms=5,
                                                           jitter=True, retry_on_error_types=["network"]))
    await integ.start()
    try:
        calls = 0

        def flaky() -> str:
            nonlocal calls
            calls += 1
            if calls < 3:
                raise ConnectionRefusedError("connection refused")
            return "rows"

        result, report = await integ.retry_operation(flaky, context={"component": "db", "operation": "query"})
        assert (result, report, calls) == ("rows", None, 3)
    finally:
        await integ.stop()


# -- issue 29: a migration that keeps everything ------------------------------------------------------------
async def test_every_seed_id_answers_and_the_counts_are_the_seeds(tmp_path: Path) -> None:
    """A primary the seed resolved kept its count of 5 and its four relations; the four errors
    aggregated into it stayed rows of their own, "open". After the migration they are the one
    resolved group they were, each id answers for it, and occurrences add up to the seed's rows."""
    seed = build_seed_database(str(tmp_path / "seed.duckdb"))
    ids = seed.ids
    flaky = [ids[n] for n in FLAKY]
    async with Served(seed.path) as s:
        groups = (await s.get("/api/errors?status=all&limit=1000"))["errors"]
        assert sum(g["aggregated_count"] for g in groups) == seed.error_rows  # one per seed row, none twice
        assert {g["error_id"] for g in groups} & set(flaky) == {flaky[0]}
        one = await s.get(f"/api/errors/{flaky[0]}")
        assert one["aggregated_count"] == 5 and one["resolution_status"] == "resolved"
        assert one["resolution_strategy"] == "restarted the scheduler"
        assert one["related_errors"] == flaky[1:] and "requested_error_id" not in one
        assert one["recovery_details"]["manual_resolution"] == {"details": {"by": "ops"}}
        assert one["error_severity"] == "high"  # the strongest of the five
        for i, alias in enumerate(flaky[1:], 1):  # every seed id answers, through its group
            body = await s.get(f"/api/errors/{alias}")
            assert body["error_id"] == flaky[0] and body["requested_error_id"] == alias
            assert alias in body["related_errors"]
            kept = body["alias"]
            assert kept["error_id"] == alias and kept["group_id"] == flaky[0] and kept["relation"] == "aggregated"
            assert kept["details"]["resolution_status"] == "open"  # as the seed left it
            assert kept["details"]["recovery_details"] == {"note": f"seen {i}"}
            context = kept["details"]["context_data"]
            assert context["related_entities"] == {"task_id": f"t{i}"} and context["metadata"] == {"queue": "q1"}
            assert "stack_trace" not in context
        # the seed's context and relations, where the API shows them
        refused = await s.get(f"/api/errors/{ids['refused']}")
        assert refused["related_entities"] == {"worker_id": "w1"}
        assert refused["related_errors"] == [ids["refused_2"], ids["refused_3"]]  # in the order the seed saw them
        assert refused["recovery_details"]["seed_migration"]["context_data"]["operation"] == "heartbeat"
        db = await s.get(f"/api/errors/{ids['db']}")
        assert db["related_errors"] == [] and db["related_entities"] == {}
        # resolve, history and reset take the seed's ids too
        status, body = await s.post(f"/api/errors/{flaky[2]}/resolve")
        assert status == 200 and body["error_id"] == flaky[0] and body["already_resolved"] is True
        assert body["requested_error_id"] == flaky[2]
        assert await s.integ.resolve_error(ids["refused_3"], "cable replaced")
        refused = await s.get(f"/api/errors/{ids['refused_2']}")
        assert refused["error_id"] == ids["refused"] and refused["resolution_status"] == "resolved"
        history = await s.get(f"/api/recovery/history?error_id={ids['refused_2']}")
        assert history["error_id"] == ids["refused"] and history["requested_error_id"] == ids["refused_2"]
        s.integ.recovery_manager.state(ids["refused"]).level = 3
        status, body = await s.post("/api/recovery/reset", {"error_id": ids["refused_3"]})
        assert status == 200 and body["reset"] == 1
        assert (await s.integ.get_recovery_history(ids["refused"]) or {})["current_level"] == 1
        async with s.session.get(str(s.server.make_url("/api/errors/err_unknown"))) as r:  # type: ignore[union-attr]
            assert r.status == 404
        assert not await s.integ.resolve_error("err_unknown", "x")
    async with Served(seed.path) as s:  # opened again: the aliases are in the file
        assert (await s.get(f"/api/errors/{flaky[4]}"))["error_id"] == flaky[0]


async def test_the_seeds_learned_values_hold_until_this_plugin_has_its_own(tmp_path: Path) -> None:
    """The seed ranked retry first for network errors (0.877 > 0.822) where the same records,
    replayed here, favour worker recovery; its timeouts were 10.1 s (retry) and 45 s (worker)."""
    seed = build_seed_database(str(tmp_path / "seed.duckdb"))

    async def network(s: Served) -> dict[str, Any]:
        return (await s.get("/api/recovery/strategies?error_type=network"))["error_types"]["network"]

    def by_id(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {e["strategy_id"]: e for e in entry["strategies"]}

    async with Served(seed.path, verify_window=0, escalation_backoff=0) as s:
        learned = await network(s)
        evidence = by_id(learned)
        assert evidence["worker"]["success_rate"] > evidence["retry"]["success_rate"]  # the evidence says worker
        first = learned["first_choice"][0]
        assert first["strategy_id"] == "retry" and first["probability"] == 1.0 and first["seed_score"] == 0.877
        assert evidence["retry"]["timeout"] == pytest.approx(10.1) and evidence["worker"]["timeout"] == 45.0
        # a new network group starts with the seed's first choice; its run is this plugin's first measurement
        ok, info = await s.integ.handle_error(ConnectionResetError("peer reset by gateway"), {
            "component": "api", "operation": "call", "callable": lambda: "done"})
        assert ok and info["strategy_id"] == "retry" and "seed" in info["attempts"][0]["decision"]["reason"]
        learned = await network(s)
        assert by_id(learned)["retry"]["timeout"] < 10.1  # measured here now
        assert by_id(learned)["worker"]["timeout"] == 45.0  # not measured here yet
        assert learned["first_choice"][0]["strategy_id"] == "retry"  # it worked: the seed's choice holds
    async with Served(seed.path, verify_window=0, escalation_backoff=0) as s:  # after a restart, the same
        learned = await network(s)
        assert learned["first_choice"][0].get("seed_score") == 0.877

        def broken() -> None:
            raise ConnectionResetError("still reset")

        ok, info = await s.integ.handle_error(ConnectionResetError("reset by storage node"), {
            "component": "storage", "operation": "read", "callable": broken})
        assert not ok and info["attempts"][0]["strategy_id"] == "retry"
        assert info["attempts"][0]["outcome"] != "success"
        # this plugin's own run of the seed's choice failed: from now on the evidence decides
        learned = await network(s)
        assert all("seed_score" not in row for row in learned["first_choice"])
        ok, info = await s.integ.handle_error(ConnectionResetError("reset by cache node"), {
            "component": "cache", "operation": "get", "callable": lambda: "ok"})
        assert "seed" not in info["attempts"][0]["decision"]["reason"]


async def test_the_seed_tools_fields_are_in_the_answers(tmp_path: Path) -> None:
    """The JSON fields the seed's tools read (issue 29, item 5), with the seed's meaning."""
    seed = build_seed_database(str(tmp_path / "seed.duckdb"))
    async with Served(seed.path) as s:
        listed = {e["error_id"]: e for e in (await s.get("/api/recovery/history"))["errors"]}
        refused = listed[seed.ids["refused"]]
        assert refused["attempts"] == 2 and refused["last_attempt"]["old_level"] == 2  # the history's last entry
        assert all("attempts" in e and "last_attempt" in e for e in listed.values())
        metrics = await s.get("/api/recovery/metrics")
        assert all(entry["strategy_id"] == sid for sid, entry in metrics["strategies"].items())
        assert metrics["top_strategies"]["network"]["strategy_name"] == "worker"
        assert metrics["overall"]["error_type_count"] == 2  # network and database, in the last 30 days
        assert metrics["overall"]["strategy_count"] == 3
        one = await s.get(f"/api/errors/{seed.ids['exhausted']}")
        assert one["related_entities"] == {"task_id": "t7"}
        report = await s.integ.report_error(ConnectionResetError("peer reset"), {"component": "api",
                                                                                 "worker_id": "w3"})
        assert (await s.get(f"/api/errors/{report.error_id}"))["related_entities"] == {"worker_id": "w3"}


@pytest.mark.parametrize("form", ["epoch", "epoch_text", "naive", "aware", "iso_naive", "iso_z", "iso_offset"])
async def test_a_stale_seed_worker_is_not_alive_whatever_form_its_heartbeat_has(form: str) -> None:
    """The seed stored ``last_heartbeat`` as ``datetime.now().isoformat()`` (issue 29, item 6):
    a string was ignored and a worker silent for an hour looked alive."""
    from datetime import UTC, timedelta

    from coordinator_plugins.contract.seed_adapter import SeedCoordinatorAdapter

    def stamp(when: datetime) -> Any:  # ``when`` is naive local time, as the seed's datetime.now()
        aware = when.astimezone(UTC)
        return {"epoch": when.timestamp(), "epoch_text": str(when.timestamp()), "naive": when, "aware": aware,
                "iso_naive": when.isoformat(), "iso_z": aware.isoformat().replace("+00:00", "Z"),
                "iso_offset": aware.astimezone(datetime.now().astimezone().tzinfo).isoformat()}[form]

    coord = SeedShapedCoordinator()
    coord.workers = {"stale": {"status": "active", "last_heartbeat": stamp(datetime.now() - timedelta(hours=1))},
                     "fresh": {"status": "active", "last_heartbeat": stamp(datetime.now() - timedelta(seconds=2))}}
    adapter = SeedCoordinatorAdapter(coord, heartbeat_timeout=30.0)
    assert not await adapter.worker_alive("stale")
    assert await adapter.worker_alive("fresh")


async def test_a_heartbeat_that_does_not_read_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    from coordinator_plugins.contract.seed_adapter import SeedCoordinatorAdapter

    coord = SeedShapedCoordinator()
    coord.workers = {w: {"status": "active", "last_heartbeat": "yesterday-ish"} for w in ("w1", "w2")}
    adapter = SeedCoordinatorAdapter(coord)
    assert await adapter.worker_alive("w1") and await adapter.worker_alive("w2")  # no time: as before, alive
    said = [r for r in caplog.records if "does not read as a time" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING"


# -- issue 29, item 7: the design's names, and the seed's module names --------------------------------------
DESIGN_NAMES = ("ErrorType", "ErrorSeverity", "ErrorContext", "ErrorReport", "RecoveryStrategy", "RetryStrategy",
                "WorkerRecoveryStrategy", "DatabaseRecoveryStrategy", "CoordinatorRecoveryStrategy",
                "SystemRecoveryStrategy", "RecoveryPerformanceRecord", "ProgressiveRecoveryLevel", "RecoveryLevel",
                "install_enhanced_error_handling", "EnhancedErrorHandlingIntegration", "EnhancedErrorRecoveryManager",
                "DistributedErrorHandler", "PerformanceBasedErrorRecovery")
SEED_MODULES = {
    "distributed_error_handler": ("DistributedErrorHandler", "ErrorType", "ErrorSeverity", "ErrorContext",
                                  "ErrorReport", "RetryPolicy"),
    "error_recovery_strategies": ("RecoveryStrategy", "RecoveryLevel", "RetryStrategy", "WorkerRecoveryStrategy",
                                  "DatabaseRecoveryStrategy", "CoordinatorRecoveryStrategy", "SystemRecoveryStrategy",
                                  "EnhancedErrorRecoveryManager"),
    "error_recovery_with_performance_tracking": ("RecoveryPerformanceRecord", "ProgressiveRecoveryLevel",
                                                 "PerformanceBasedErrorRecovery"),
    "enhanced_error_handling_integration": ("EnhancedErrorHandlingIntegration", "install_enhanced_error_handling"),
}


def test_every_name_of_the_design_is_importable_and_each_seed_module_has_its_names() -> None:
    import importlib

    import coordinator_plugins.error_handling as eh

    missing = [n for n in DESIGN_NAMES if not hasattr(eh, n)]
    assert not missing, missing
    for module, names in SEED_MODULES.items():
        mod = importlib.import_module(f"coordinator_plugins.compat.{module}")
        for name in names:
            assert getattr(mod, name) is getattr(eh, name), (module, name)  # the real classes, not copies


async def test_the_parts_have_the_designs_names(tmp_path: Path) -> None:
    import coordinator_plugins.error_handling as eh

    integ = eh.EnhancedErrorHandlingIntegration(None, {"database": str(tmp_path / "eh.duckdb")})
    assert isinstance(integ.error_handler, eh.DistributedErrorHandler)
    assert isinstance(integ.recovery_manager, eh.EnhancedErrorRecoveryManager)
    assert isinstance(integ.performance_recovery, eh.PerformanceBasedErrorRecovery)


async def test_a_recovery_performance_record_is_what_a_run_is_stored_as(tmp_path: Path) -> None:
    from coordinator_plugins.error_handling import RecoveryPerformanceRecord

    record = RecoveryPerformanceRecord("retry", "Retry", "network", 0.25, True, "gpu-1", 3, 2)  # the design's order
    assert (record.hardware_id, record.affected_tasks, record.recovered_tasks, record.outcome) == ("gpu-1", 3, 2,
                                                                                                   "success")
    assert set(record.to_dict()) >= {"strategy_id", "strategy_name", "error_type", "execution_time", "success",
                                     "timestamp", "hardware_id", "affected_tasks", "recovered_tasks",
                                     "resource_usage", "impact_score", "stability_score", "context"}
    with pytest.raises(ValueError, match=r"RecoveryPerformanceRecord\.success"):
        RecoveryPerformanceRecord("retry", "Retry", "network", 0.25, "yes")  # type: ignore[arg-type]
    integ = EnhancedErrorHandlingIntegration(None, {"database": str(tmp_path / "eh.duckdb"), "auto_recover": False,
                                                    "verify_window": 0})
    await integ.start()
    try:
        await integ.store.wait_durable(integ.store.record_strategy_run(record.to_run()))
        (stored,) = await integ.store.strategy_runs()
        assert RecoveryPerformanceRecord.from_run(stored) == record  # through the real table and back
        # the plugin's own runs are recorded through it: each stored run reads back as one
        ok, info = await integ.handle_error(ConnectionResetError("peer reset"), {"component": "api",
                                                                                 "callable": lambda: 1})
        await integ.flush()
        runs = [RecoveryPerformanceRecord.from_run(r) for r in await integ.store.strategy_runs()]
        assert ok and runs[0].strategy_id == info["strategy_id"] == "retry" and runs[0].error_id == info["error_id"]
    finally:
        await integ.stop()
