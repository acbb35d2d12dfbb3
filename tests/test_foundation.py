"""Issue 2: package, plugin loading from config, setup(), the reference coordinator and workers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from conftest import wait_for
from coordinator_plugins import available_plugins, load_config, load_plugins
from coordinator_plugins.error_handling import (
    ERROR_HANDLING_KEY,
    EnhancedErrorHandlingIntegration,
    ErrorHandlingConfig,
    setup,
    validate_config,
)
from coordinator_plugins.reference import CoordinatorProtocol, build_app
from coordinator_plugins.reference.coordinator import Coordinator


def test_entry_point_discovers_error_handling() -> None:
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="coordinator_plugins")}
    assert "error_handling" in names, "the package must be installed with its entry point"
    assert available_plugins()["error_handling"] is setup


def test_unknown_plugin_is_rejected_naming_the_accepted() -> None:
    app = web.Application()
    with pytest.raises(ValueError, match=r"plugins.enabled: unknown plugin 'nope'; accepted: error_handling"):
        load_plugins(app, None, {"plugins": {"enabled": ["nope"]}})
    assert ERROR_HANDLING_KEY not in app


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"max_recovery_level": "5"}, r"plugins.error_handling.max_recovery_level: expected an integer from 1 to 5"),
        ({"max_recovery_level": 9}, r"max_recovery_level: expected an integer from 1 to 5, got 9"),
        ({"auto_recover": "yes"}, r"auto_recover: expected true or false"),
        ({"selection": "random"}, r"selection: expected one of adaptive, score, ladder"),
        ({"databse": "x"}, r"plugins.error_handling.databse: unknown key; accepted: .*database"),
        ({"builtin_strategies": ["retry", "magic"]}, r"builtin_strategies: expected a list drawn from"),
        ({"hooks": {"*": ["no.such.module:hook"]}}, r"hooks.\*: cannot import module 'no.such.module'"),
        ({"strategies": {"mine": "json:dumps"}}, r"strategies.mine: expected a RecoveryStrategy subclass"),
        ({"strategies": {"retry": "json:dumps"}}, r"strategies.retry: 'retry' is a built-in strategy id"),
        ({"escalation_backoff": -1}, r"escalation_backoff: expected a number from 0"),
        ({"api_prefix": "api"}, r"api_prefix: expected a path starting with"),
    ],
)
def test_invalid_config_fails_before_anything_is_installed(table: dict[str, object], message: str) -> None:
    app = web.Application()
    with pytest.raises(ValueError, match=message):
        load_plugins(app, None, {"plugins": {"enabled": ["error_handling"], "error_handling": table}})
    assert ERROR_HANDLING_KEY not in app
    assert len(app.router.routes()) == 0
    assert len(app.cleanup_ctx) == 0


def test_every_bad_key_is_reported_at_once_with_a_suggestion_for_near_misses() -> None:
    with pytest.raises(ValueError) as err:
        validate_config({"databse": "x", "max_recovery_level": 9, "recovery_budget": -3, "verify_window": "long"})
    lines = str(err.value).splitlines()
    assert len(lines) == 4, lines
    assert lines[0].startswith("plugins.error_handling.databse: unknown key;")
    assert lines[0].endswith("did you mean 'database'?")
    assert "max_recovery_level: expected an integer from 1 to 5, got 9" in lines[1]
    assert "recovery_budget: expected an integer from 0 to 1000000, got -3" in lines[2]
    assert "verify_window: expected a number" in lines[3]
    with pytest.raises(ValueError) as far:
        validate_config({"zzzz": 1})
    assert "did you mean" not in str(far.value)


def test_a_config_built_in_code_is_checked_like_one_from_a_file() -> None:
    bad = ErrorHandlingConfig(max_recovery_level=9, recovery_budget=-3)
    with pytest.raises(ValueError, match=r"max_recovery_level: expected an integer from 1 to 5, got 9"):
        setup(web.Application(), None, bad)
    with pytest.raises(ValueError, match=r"recovery_budget: expected an integer from 0 to 1000000, got -3"):
        EnhancedErrorHandlingIntegration(None, bad)
    good = validate_config(ErrorHandlingConfig(escalation_backoff=2))
    assert good.escalation_backoff == 2.0 and isinstance(good.escalation_backoff, float)


def test_protect_reads_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COORDINATOR_PLUGINS_API_TOKEN", raising=False)
    with pytest.raises(ValueError, match=r"plugins.error_handling.protect_reads: needs api_token"):
        validate_config({"protect_reads": True})
    assert validate_config({"protect_reads": True, "api_token": "t"}).protect_reads
    monkeypatch.setenv("COORDINATOR_PLUGINS_API_TOKEN", "from-env")
    assert validate_config({}).api_token == "from-env"
    assert validate_config({"api_token": ""}).api_token == ""


def test_coordinator_config_is_checked() -> None:
    with pytest.raises(ValueError, match=r"coordinator.port: expected an integer from 0 to 65535, got 'x'"):
        build_app({"coordinator": {"port": "x"}})
    with pytest.raises(ValueError, match=r"coordinator.heartbeat_timeout: must be greater"):
        build_app({"coordinator": {"heartbeat_interval": 2.0, "heartbeat_timeout": 1.0}})
    with pytest.raises(ValueError, match=r"coordinatr: unknown config table"):
        build_app({"coordinatr": {}})


def test_setup_twice_and_after_start_are_refused() -> None:
    app = web.Application()
    integ = setup(app, None, {"database": ":memory:"})
    assert app[ERROR_HANDLING_KEY] is integ
    with pytest.raises(RuntimeError, match="already set up"):
        setup(app, None, {"database": ":memory:"})
    frozen = web.Application()
    frozen.freeze()
    with pytest.raises(RuntimeError, match="already started"):
        setup(frozen)


def test_setup_sets_the_coordinator_attribute() -> None:
    coord = Coordinator()
    integ = setup(web.Application(), coord, {"database": ":memory:"})
    assert coord.enhanced_error_handling is integ
    assert isinstance(coord, CoordinatorProtocol)


def test_toml_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[coordinator]\nport = 0\n[plugins]\nenabled = ["error_handling"]\n'
                    '[plugins.error_handling]\ndatabase = ":memory:"\n')
    cfg = load_config(path)
    assert cfg["plugins"]["error_handling"]["database"] == ":memory:"
    path.write_text("[coordinator\n")
    with pytest.raises(ValueError, match="invalid TOML"):
        load_config(path)


async def test_workers_register_take_tasks_and_finish_them(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False}, workers=2)
    ids = [await farm.submit(duration=0.05) for _ in range(8)]
    await wait_for(lambda: all(farm.coord.tasks[t].status == "completed" for t in ids), 20, "tasks completed")
    ran_on = {farm.coord.tasks[t].worker_id for t in ids}
    assert ran_on == {"worker-1", "worker-2"}
    status, body = await farm.get("/api/status")
    assert status == 200 and body["workers"]["active"] == 2 and body["tasks"]["completed"] == 8
    status, body = await farm.get(f"/api/tasks/{ids[0]}")
    assert body["result"]["outcome"] == "pass" and body["completions"] == 1


async def test_killed_worker_is_lost_and_its_task_goes_back_to_pending(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False}, workers=1)
    tid = await farm.submit(duration=30)
    await wait_for(lambda: farm.coord.tasks[tid].status == "running", 10, "task running")
    killed_at = time.monotonic()
    assert await farm.coord.launcher.kill("worker-1")
    await wait_for(lambda: farm.coord.workers["worker-1"].status == "lost", 5, "worker marked lost")
    noticed = time.monotonic() - killed_at
    assert noticed <= farm.coord.settings.heartbeat_timeout + 1.0
    assert farm.coord.tasks[tid].status == "pending" and farm.coord.tasks[tid].worker_id is None
    # A restarted worker registers again and takes the task.
    farm.coord.tasks[tid].spec["duration"] = 0.05
    await farm.coord.launcher.start("worker-1")
    await wait_for(lambda: farm.coord.workers["worker-1"].status == "active", 10, "re-registered")
    assert farm.coord.workers["worker-1"].incarnation == 2
    await wait_for(lambda: farm.coord.tasks[tid].status == "completed", 10, "task completed after restart")


async def test_contract_actions_against_real_workers(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False}, workers=2)
    c = farm.coord
    # pause / resume scheduling
    await c.pause_scheduling()
    tid = await farm.submit(duration=0.05)
    await asyncio.sleep(0.4)
    assert c.tasks[tid].status == "pending" and c.scheduling_paused()
    await c.resume_scheduling()
    assert await c.wait_task(tid, 10) == "completed"
    # drain: a drained worker gets nothing
    assert await c.drain_worker("worker-1")
    ids = [await farm.submit(duration=0.05) for _ in range(4)]
    for t in ids:
        assert await c.wait_task(t, 10) == "completed"
    assert {c.tasks[t].worker_id for t in ids} == {"worker-2"}
    assert await c.undrain_worker("worker-1")
    # requeue a worker's running task
    long = await farm.submit(duration=30)
    await wait_for(lambda: c.tasks[long].status == "running", 10, "long task running")
    owner = c.tasks[long].worker_id
    assert owner is not None
    await c.drain_worker(owner)
    assert await c.requeue_worker_tasks(owner) == [long]
    assert c.tasks[long].worker_id != owner
    # restart the (busy) worker: a new process, registered and heartbeating
    old_pid = c.workers[owner].pid
    assert await c.restart_worker(owner, timeout=15) == owner
    assert c.workers[owner].pid != old_pid and await c.worker_alive(owner)
    await c.undrain_worker(owner)
    # retry a failed task
    bad = await farm.submit(duration=0.01, outcome="error")
    assert await c.wait_task(bad, 10) == "failed"
    c.tasks[bad].spec["outcome"] = "pass"
    assert await c.retry_task(bad)
    assert await c.wait_task(bad, 10) == "completed" and c.tasks[bad].attempt == 2
    # max concurrency
    await c.set_max_concurrency(1)
    assert await c.get_max_concurrency() == 1
    await c.set_max_concurrency(0)
    # health
    health = await c.health()
    assert health["healthy"] and health["database"] and health["components"]["scheduler"]


async def test_component_restart_and_database_reconnect(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False}, workers=1)
    c = farm.coord
    assert await c.stop_component("scheduler")
    assert not await c.component_healthy("scheduler")
    tid = await farm.submit(duration=0.05)
    await asyncio.sleep(0.4)
    assert c.tasks[tid].status == "pending"
    assert await c.restart_component("scheduler")
    assert await c.wait_task(tid, 10) == "completed"
    # database: break it, writes buffer, reconnect writes them
    c.db.break_connection()
    t2 = await farm.submit(duration=0.05)
    assert await c.wait_task(t2, 10) == "completed"
    await wait_for(lambda: not c.db.ok, 5, "db marked broken")
    assert not (await c.health())["database"]
    assert await c.reconnect_database()
    rows = {r["task_id"]: r for r in await c.db.load_tasks()}
    assert rows[t2]["status"] == "completed"
    assert (await c.health())["database"]


async def test_reload_state_repairs_inconsistencies(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False})
    c = farm.coord
    await c.pause_scheduling()
    tid = await farm.submit(duration=0.05)
    c.pending.clear()  # an inconsistency: a pending task that is in no queue
    await c.db.flush()
    del c.tasks[tid]  # and one lost from memory but in the database
    t2 = await farm.submit(duration=0.05)
    c.pending.clear()
    assert await c.reload_state()
    assert set(c.pending) == {tid, t2}


def test_serve_cli_rejects_a_bad_config(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[plugins]\nenabled = ["error_handling", "nope"]\n')
    proc = subprocess.run([sys.executable, "-m", "coordinator_plugins", "serve", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "plugins.enabled: unknown plugin 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_serve_subprocess_with_two_real_workers(tmp_path: Path) -> None:
    cfg = tmp_path / "farm.toml"
    cfg.write_text(
        '[coordinator]\nhost = "127.0.0.1"\nport = 0\nworkers = 2\nheartbeat_interval = 0.2\nheartbeat_timeout = 2.0\n'
        f'database = "{tmp_path / "coord.duckdb"}"\n[plugins]\nenabled = ["error_handling"]\n'
        f'[plugins.error_handling]\ndatabase = "{tmp_path / "eh.duckdb"}"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coordinator_plugins", "serve", "--config", str(cfg),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert "listening on" in line, line
        url = line.strip().rsplit(" ", 1)[-1]
        async with aiohttp.ClientSession() as s:
            async def status() -> dict:
                async with s.get(url + "/api/status") as r:
                    return await r.json()

            for _ in range(200):
                if (await status())["workers"]["active"] == 2:
                    break
                await asyncio.sleep(0.1)
            ids = []
            for _ in range(6):
                async with s.post(url + "/api/tasks", json={"kind": "sim", "duration": 0.05}) as r:
                    ids.append((await r.json())["task_id"])
            for _ in range(200):
                if (await status())["tasks"].get("completed") == 6:
                    break
                await asyncio.sleep(0.1)
            st = await status()
            assert st["tasks"]["completed"] == 6
            pids = [w["pid"] for w in st["workers_detail"]]
            async with s.get(url + "/api/diagnostics") as r:
                assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_every_database_outage_is_reported(make_farm) -> None:
    """Each outage of the coordinator's database is reported, not only the first one."""
    farm = await make_farm(plugin={"builtin_strategies": ["database"], "recovery_budget": 0})
    c, integ = farm.coord, farm.integ
    def reported() -> int:
        return sum(g.aggregated_count for g in integ.error_handler.groups if g.context.component == "database")

    for outage in range(1, 4):
        c.db.break_connection()
        await farm.submit(duration=0.01)  # a write that must fail
        await wait_for(lambda n=outage: reported() == n, 10, f"outage {outage} reported")
        await wait_for(lambda: c.db.ok and not c.db.pending_rows, 15, f"outage {outage} recovered")
    assert reported() == 3


async def test_a_restarted_worker_keeps_its_arguments(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False}, coordinator={"worker_max_tasks": 3}, workers=1)
    c = farm.coord
    assert c.workers["worker-1"].max_tasks == 3
    assert await c.restart_worker("worker-1", timeout=15) == "worker-1"
    assert c.workers["worker-1"].max_tasks == 3  # restarts used to come back with the default 1


def _watchdog_reports(integ: Any, component: str) -> int:
    return sum(g.aggregated_count for g in integ.error_handler.groups
               if g.context.component == component and g.context.operation == "watchdog")


async def test_a_loop_stopped_again_before_the_watchdog_looked_is_reported_again(make_farm) -> None:
    """Found by the soak: a recovery restarted the scheduler and a fault stopped it again before
    the watchdog's next tick; the watchdog only reported healthy-to-down edges, so the second
    outage was never reported, the group stayed resolved and no task ran again."""
    farm = await make_farm(plugin={"auto_recover": False}, coordinator={"watchdog_repeat": 3600})
    c, integ = farm.coord, farm.integ
    assert await c.stop_component("scheduler")
    await wait_for(lambda: _watchdog_reports(integ, "scheduler") == 1, 5, "first outage reported")
    # The scheduler's watchdog (the heartbeat monitor) does not tick while it is restarted and
    # stopped again: the same window as a restart and a new fault within one tick.
    assert await c.stop_component("heartbeat_monitor")
    assert await c.restart_component("scheduler")
    assert await c.stop_component("scheduler")
    c.components["heartbeat_monitor"].start()
    await wait_for(lambda: _watchdog_reports(integ, "scheduler") == 2, 5, "second outage reported")
    await asyncio.sleep(0.5)
    assert _watchdog_reports(integ, "scheduler") == 2  # one report per outage, not per tick


async def test_a_loop_that_stays_down_is_reported_again(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False}, coordinator={"watchdog_repeat": 0.5})
    c, integ = farm.coord, farm.integ
    assert await c.stop_component("scheduler")
    await wait_for(lambda: _watchdog_reports(integ, "scheduler") >= 3, 5, "repeated reports of a loop still down")
    assert await c.restart_component("scheduler")
    await asyncio.sleep(0.3)
    settled = _watchdog_reports(integ, "scheduler")
    await asyncio.sleep(1.0)
    assert _watchdog_reports(integ, "scheduler") == settled  # healthy again: no more reports
