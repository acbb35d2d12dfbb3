"""Issue 27 (SPEC 9): recovery that tells the truth. No success a strategy did not earn, a bound
on recoveries per target, the level shown is the level running, /metrics agrees with the API, a
bounded wait for the caller, and user strategies whose bookkeeping is private."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from conftest import wait_for
from coordinator_plugins.error_handling import (
    EnhancedErrorHandlingIntegration,
    ErrorCategory,
    NotApplicable,
    RecoveryLevel,
    RecoveryStrategy,
    setup,
    validate_config,
)


# -- item 1: no success after acting on something that was not broken ---------------------------------
async def test_the_database_strategy_does_not_reconnect_the_plugins_healthy_store(tmp_path: Path) -> None:
    app = web.Application()
    integ = setup(app, None, {"database": str(tmp_path / "e.duckdb"), "auto_recover": False,
                              "escalation_backoff": 0, "verify_window": 0})
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        ok, info = await integ.handle_error(sqlite3.OperationalError("database connection lost"),
                                            {"component": "dispatcher"})
        assert not ok, info
        db = [a for a in info["attempts"] if a["strategy_id"] == "database"]
        assert db and db[0]["outcome"] == "not_applicable", info["attempts"]
        assert "no broken database connection" in db[0]["error"], db
    finally:
        await runner.cleanup()


async def test_no_builtin_reports_success_for_a_healthy_farm(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "escalation_backoff": 0, "verify_window": 0,
                                   "builtin_strategies": ["database", "coordinator"]}, workers=1)
    # the coordinator's database answers: reconnecting it is not a fix
    ok, info = await farm.integ.handle_error(sqlite3.OperationalError("database connection lost"),
                                             {"component": "results", "operation": "insert"})
    assert not ok, info
    assert {a["strategy_id"]: a["outcome"] for a in info["attempts"]} == {"database": "not_applicable"}, info
    # the scheduler ticks: restarting it is not a fix
    ok, info = await farm.integ.handle_error("scheduler loop stalled", {"component": "scheduler"})
    assert not ok, info
    assert [(a["strategy_id"], a["outcome"]) for a in info["attempts"]] == [("coordinator", "not_applicable")], info
    assert "'scheduler' is running" in info["attempts"][0]["error"]



async def test_the_worker_strategy_does_not_restart_a_worker_that_runs(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "escalation_backoff": 0, "verify_window": 0,
                                   "builtin_strategies": ["worker"]}, workers=1)
    c = farm.coord
    pid = c.workers["worker-1"].pid
    ok, info = await farm.integ.handle_error("worker lost", {"component": "worker", "worker_id": "worker-1"})
    assert not ok, info
    assert [(a["strategy_id"], a["outcome"]) for a in info["attempts"]] == [("worker", "not_applicable")], info
    assert "heartbeat and run: nothing lost" in info["attempts"][0]["error"]
    assert c.workers["worker-1"].pid == pid  # not restarted
    await c.launcher.kill("worker-1")  # now it is lost: it is brought back
    ok, info = await farm.integ.handle_error("worker lost", {"component": "worker", "worker_id": "worker-1",
                                                             "operation": "heartbeat"})
    assert ok and info["strategy_id"] == "worker", info
    assert c.workers["worker-1"].pid != pid and await c.worker_alive("worker-1")

# -- item 3: restart intensity per target, whether or not each recovery held ---------------------------
class Fixer(RecoveryStrategy):
    """Always says it fixed it (and the fix holds for its verify window)."""

    def __init__(self) -> None:
        super().__init__(None, "fixer", RecoveryLevel.LOW)
        self.calls = 0

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        self.calls += 1
        return True


async def integ_with(tmp_path: Path, strategy: RecoveryStrategy, **cfg: Any) -> EnhancedErrorHandlingIntegration:
    base: dict[str, Any] = {"database": str(tmp_path / "truth.duckdb"), "auto_recover": False,
                            "builtin_strategies": [], "escalation_backoff": 0, "max_recovery_level": 1}
    integ = EnhancedErrorHandlingIntegration(None, validate_config(base | cfg))
    integ.add_custom_strategy("fixer", strategy)
    await integ.start()
    return integ


async def test_a_fix_that_holds_past_its_window_and_comes_back_counts_toward_the_intensity(tmp_path: Path) -> None:
    fixer = Fixer()
    integ = await integ_with(tmp_path, fixer, verify_window=0.3, max_recoveries_per_group=3, budget_window=600)
    rm = integ.recovery_manager
    try:
        ctx = {"component": "cache", "operation": "refresh"}
        for n in range(1, 4):
            ok, info = await integ.handle_error("cache refresh failed", ctx)
            assert ok and fixer.calls == n, info
            await wait_for(lambda: len(rm.probation) == 0, 10, "the fix held past its verify window")
            assert rm.probation.held == n
        ok, info = await integ.handle_error("cache refresh failed", ctx)  # back again: the 4th
        assert not ok and fixer.calls == 3, info
        assert "recovery does not hold: 3 recoveries of component:cache" in info["reason"]
        group = integ.error_handler.groups.get(info["error_id"])
        assert group.resolution_status == "failed" and info["error_id"] in rm.stopped_groups()
        assert (await integ.run_diagnostics())["status"] == "degraded"
    finally:
        await integ.stop()


async def test_incidents_on_different_workers_in_one_group_do_not_count_against_each_other(tmp_path: Path) -> None:
    fixer = Fixer()
    integ = await integ_with(tmp_path, fixer, verify_window=0, max_recoveries_per_group=2, budget_window=600)
    try:
        for w in ("w1", "w2", "w3", "w4", "w1"):  # one group, four workers: w1 twice, the others once
            ok, info = await integ.handle_error("worker link reset", {"component": "link", "worker_id": w})
            assert ok, (w, info)
        assert fixer.calls == 5 and not integ.recovery_manager.stopped_groups()
        ok, info = await integ.handle_error("worker link reset", {"component": "link", "worker_id": "w1"})
        assert not ok and fixer.calls == 5, info  # w1's third recovery within the window
        assert "2 recoveries of worker:w1" in info["reason"]
    finally:
        await integ.stop()


# -- item 4: the level shown is the level running -------------------------------------------------------
class Blocking(RecoveryStrategy):
    def __init__(self, gate: asyncio.Event) -> None:
        super().__init__(None, "blocking", RecoveryLevel.HIGH)
        self.gate = gate
        self.started = asyncio.Event()

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        self.started.set()
        await self.gate.wait()
        return True


async def test_the_level_shown_while_a_high_strategy_runs_is_its_level(tmp_path: Path) -> None:
    app = web.Application()
    integ = setup(app, None, {"database": str(tmp_path / "e.duckdb"), "auto_recover": False, "builtin_strategies": [],
                              "escalation_backoff": 0, "verify_window": 0})
    gate = asyncio.Event()
    blocking = Blocking(gate)
    integ.add_custom_strategy("blocking", blocking)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            running = asyncio.create_task(integ.handle_error("export stalled", {"component": "export"}))
            await asyncio.wait_for(blocking.started.wait(), 10)
            async with s.get(str(server.make_url("/api/errors"))) as r:
                groups = (await r.json())["errors"]
            assert [g["recovery_level"] for g in groups] == [4], groups  # the HIGH strategy runs at L4
            async with s.get(str(server.make_url(f"/api/errors/{groups[0]['error_id']}"))) as r:
                assert (await r.json())["current_recovery_level"] == 4
            gate.set()
            ok, info = await running
            assert ok and info["recovery_level"] == 4
    finally:
        await server.close()


# -- item 5: /metrics and /api/recovery/metrics agree after a reversal -----------------------------------
def _prom(text: str, outcome: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("error_handling_recovery_attempts_total{") and f'outcome="{outcome}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_metrics_and_the_api_count_a_reversed_success_as_a_failure(tmp_path: Path) -> None:
    app = web.Application()
    integ = setup(app, None, {"database": str(tmp_path / "e.duckdb"), "auto_recover": False, "builtin_strategies": [],
                              "escalation_backoff": 0, "verify_window": 2, "max_recovery_level": 2})
    fixer = Fixer()
    integ.add_custom_strategy("fixer", fixer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            async def both() -> tuple[str, Any]:
                async with s.get(str(server.make_url("/metrics"))) as r:
                    prom = await r.text()
                async with s.get(str(server.make_url("/api/recovery/metrics"))) as r:
                    return prom, await r.json()

            ctx = {"component": "cache", "operation": "refresh"}
            ok, _ = await integ.handle_error("cache refresh failed", ctx)
            assert ok
            prom, api = await both()
            # provisional: a success in neither view yet
            assert _prom(prom, "success") == 0, prom
            await integ.report_error("cache refresh failed", ctx)  # it came back: the success did not hold
            await wait_for(lambda: integ.recovery_manager.probation.recurred == 1, 10, "the reversal")
            prom, api = await both()
            assert _prom(prom, "success") == 0 and _prom(prom, "failure") == 1, prom
            assert api["overall"]["successes"] == 0 and api["overall"]["outcomes"] == {"failure": 1}, api
            ok, _ = await integ.handle_error("cache refresh failed", ctx)  # this one holds
            assert ok
            await wait_for(lambda: integ.recovery_manager.probation.held == 1, 10, "the fix held")
            prom, api = await both()
            assert _prom(prom, "success") == 1 and _prom(prom, "failure") == 1, prom
            assert api["overall"]["successes"] == 1 and api["overall"]["outcomes"] == {"failure": 1, "success": 1}, api
    finally:
        await server.close()


# -- item 6: a bounded wait for the caller; a timed-out attempt records what it did ----------------------
async def test_handle_error_returns_after_its_wait_with_the_recovery_still_running(tmp_path: Path) -> None:
    gate = asyncio.Event()
    blocking = Blocking(gate)
    integ = await integ_with(tmp_path, blocking, handle_error_wait=0.2, verify_window=0, max_recovery_level=5)
    try:
        # without the bound this call waits for the gate, which nobody opens: the test fails, not hangs
        ok, info = await asyncio.wait_for(integ.handle_error("export stalled", {"component": "export"}), 30)
        assert not ok and info["in_progress"] is True, info
        assert info["follow"] == f"/api/errors/{info['error_id']}" and "handle_error_wait" in info["reason"]
        assert blocking.started.is_set() and info["error_id"] in integ.recovery_manager.inflight  # it goes on
        gate.set()
        group = integ.error_handler.groups.get(info["error_id"])
        await wait_for(lambda: group.resolution_status.value == "resolved", 10, "the recovery that went on")
        assert group.resolution_strategy == "fixer"
    finally:
        await integ.stop()


class MovesThenHangs(RecoveryStrategy):
    def __init__(self) -> None:
        super().__init__(None, "moves then hangs", RecoveryLevel.LOW)

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        error_info["affected_tasks"].extend(["t1", "t2", "t3"])
        error_info["details"]["moved"] = 3
        await asyncio.Event().wait()  # never ends: its timeout does
        return True


async def test_an_attempt_that_timed_out_still_records_the_tasks_it_moved(tmp_path: Path) -> None:
    integ = await integ_with(tmp_path, MovesThenHangs(), default_timeout=0.2, verify_window=0)
    try:
        ok, info = await integ.handle_error("requeue stalled", {"component": "queue"})
        assert not ok
        [attempt] = info["attempts"]
        assert attempt["outcome"] == "timeout" and attempt["affected_tasks"] == ["t1", "t2", "t3"], attempt
        assert attempt["details"] == {"moved": 3}
    finally:
        await integ.stop()


# -- item 7: the base class's bookkeeping is private; a shadowed method is refused at registration ------
class OwnBookkeeping(RecoveryStrategy):
    """Uses the generic names a user would: runs, successes, applicable."""

    def __init__(self) -> None:
        super().__init__(None, "own bookkeeping", RecoveryLevel.LOW)
        self.runs: list[str] = []
        self.successes = "none yet"
        self.applicable = True

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        self.runs.append(str(error_info["error_id"]))
        return True


async def test_a_subclass_may_use_runs_successes_and_applicable_for_its_own_state(tmp_path: Path) -> None:
    mine = OwnBookkeeping()
    integ = await integ_with(tmp_path, mine, verify_window=0)
    try:
        ok, info = await integ.handle_error("cache refresh failed", {"component": "cache"})
        assert ok and info["strategy_id"] == "fixer", info
        assert mine.runs == [info["error_id"]] and mine.successes == "none yet" and mine.applicable is True
        assert mine.run_counts() == {"runs": 1, "successes": 1}
    finally:
        await integ.stop()


class ShadowsIsApplicable(RecoveryStrategy):
    def __init__(self) -> None:
        super().__init__(None, "shadows", RecoveryLevel.LOW)
        self.is_applicable = True  # type: ignore[assignment,method-assign]


class ShadowsRun(RecoveryStrategy):
    run = None  # type: ignore[assignment]


async def test_a_subclass_that_shadows_a_method_the_manager_calls_is_refused_naming_it(tmp_path: Path) -> None:
    integ = EnhancedErrorHandlingIntegration(None, validate_config(
        {"database": str(tmp_path / "e.duckdb"), "builtin_strategies": [], "auto_recover": False}))
    with pytest.raises(ValueError, match="attribute 'is_applicable' is bool"):
        integ.add_custom_strategy("shadows", ShadowsIsApplicable())
    with pytest.raises(ValueError, match="attribute 'run' is NoneType"):
        integ.add_custom_strategy("shadows_run", ShadowsRun(None, "r", RecoveryLevel.LOW))


# -- issue 28 item 1: categories as enum members or strings; unknown ones refused; no probability for ----
# -- a strategy that cannot run --------------------------------------------------------------------------
class DbByEnum(Fixer):
    categories = {ErrorCategory.DB_CONNECTION}  # type: ignore[assignment]  (as a user writes it)


class DbByString(Fixer):
    categories = {"db_connection"}  # type: ignore[assignment]


class Misspelt(Fixer):
    categories = {"db_conection"}  # type: ignore[assignment]


@pytest.mark.parametrize("cls", [DbByEnum, DbByString])
async def test_categories_declared_on_the_class_as_members_or_strings_both_run(tmp_path: Path, cls: type) -> None:
    strategy = cls()
    integ = await integ_with(tmp_path, strategy, verify_window=0)
    try:
        ok, info = await integ.handle_error(ConnectionError("database connection lost"),
                                            {"component": "db", "error_type": "database", "category": "db_connection"})
        assert integ.error_handler.groups.get(info["error_id"]).category is ErrorCategory.DB_CONNECTION
        assert ok and info["strategy_id"] == "fixer" and strategy.calls == 1, info
    finally:
        await integ.stop()


def test_an_unknown_category_is_refused_at_registration_listing_the_valid_ones(tmp_path: Path) -> None:
    integ = EnhancedErrorHandlingIntegration(None, validate_config(
        {"database": str(tmp_path / "e.duckdb"), "builtin_strategies": [], "auto_recover": False}))
    with pytest.raises(ValueError, match=r"unknown category 'db_conection'; valid: .*db_connection"):
        integ.add_custom_strategy("misspelt", Misspelt())
    with pytest.raises(ValueError, match=r"categories: unknown category 'nope'"):
        RecoveryStrategy(None, "x", RecoveryLevel.LOW, categories=["nope"])


async def test_a_strategy_that_cannot_run_gets_no_probability_and_says_why(tmp_path: Path) -> None:
    app = web.Application()
    integ = setup(app, None, {"database": str(tmp_path / "e.duckdb"), "auto_recover": False,
                              "builtin_strategies": ["retry", "worker", "database"]})
    integ.add_custom_strategy("by_enum", DbByEnum())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(str(server.make_url("/api/recovery/strategies?error_type=database"))) as r:
                body = await r.json()
        entry = body["error_types"]["database"]
        first = {row["strategy_id"] for row in entry["first_choice"]}
        by_id = {e["strategy_id"]: e for e in entry["strategies"]}
        # no coordinator: the worker strategy can never act; it gets no probability, and says why
        assert "worker" not in first and "first_choice" not in by_id["worker"], by_id["worker"]
        assert "coordinator" in by_id["worker"]["cannot_run"] and by_id["worker"]["why"].startswith("cannot run")
        assert {"by_enum", "database", "retry"} <= first, entry["first_choice"]
        assert "cannot_run" not in by_id["by_enum"]
    finally:
        await server.close()


class FindsNothing(RecoveryStrategy):
    """HIGH; says it may act, then finds nothing broken (as `database` on a healthy farm)."""

    def __init__(self) -> None:
        super().__init__(None, "finds nothing", RecoveryLevel.HIGH)

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        raise NotApplicable("nothing broken")


async def test_a_first_choice_that_finds_nothing_falls_back_to_the_levels_it_skipped(tmp_path: Path) -> None:
    """A new group's first strategy is drawn among every level below 5, and the levels below it
    are skipped. When it finds nothing to act on, and nothing above it can, the skipped levels
    are walked after all: the poison task on the reference farm was otherwise never retried
    when `database` (L4) was drawn first."""
    started_high = 0
    for seed in range(12):
        fixer = Fixer()
        (tmp_path / str(seed)).mkdir()
        integ = await integ_with(tmp_path / str(seed), fixer, verify_window=0, max_recovery_level=5, seed=seed)
        integ.add_custom_strategy("finds_nothing", FindsNothing())
        try:
            ok, info = await integ.handle_error("cache refresh failed", {"component": "cache"})
            started_high += info["attempts"][0]["strategy_id"] == "finds_nothing"
            assert ok and info["strategy_id"] == "fixer" and fixer.calls == 1, (seed, info)
        finally:
            await integ.stop()
    assert started_high, "no seed drew the HIGH strategy first: the fall-back was not exercised"
