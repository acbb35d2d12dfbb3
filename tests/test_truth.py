"""Issue 27 (SPEC 9): recovery that tells the truth. No success a strategy did not earn, a bound
on recoveries per target, the level shown is the level running, /metrics agrees with the API, a
bounded wait for the caller, and user strategies whose bookkeeping is private."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aiohttp import web

from conftest import wait_for
from coordinator_plugins.error_handling import setup


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
