"""Issue 4: the built-in strategies really recover the running coordinator, and verify it."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from conftest import wait_for
from coordinator_plugins.error_handling import (
    CoordinatorRecoveryStrategy,
    DatabaseRecoveryStrategy,
    EnhancedErrorHandlingIntegration,
    RecoveryLevel,
    RecoveryStrategy,
    RetryStrategy,
    SystemRecoveryStrategy,
    WorkerRecoveryStrategy,
    validate_config,
)
from coordinator_plugins.error_handling.observe.sampler import ResourceSampler
from coordinator_plugins.reference import SeedCoordinatorAdapter
from tests.strategies_for_tests import SeedShapedCoordinator


async def test_worker_strategy_brings_a_killed_worker_back_and_its_task_completes(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "builtin_strategies": ["worker"]}, workers=2)
    c = farm.coord
    tid = await farm.submit(duration=1.0)
    await wait_for(lambda: c.tasks[tid].status == "running", 10, "task running")
    victim = c.tasks[tid].worker_id
    assert victim is not None
    other = "worker-2" if victim == "worker-1" else "worker-1"
    old_pid = c.workers[victim].pid
    await c.launcher.kill(victim)
    ok, info = await farm.integ.handle_error(
        f"worker {victim} crashed (killed by signal 9)", {"component": "worker", "worker_id": victim,
                                                         "task_id": tid})
    assert ok, info
    assert info["strategy_id"] == "worker" and info["recovery_level"] == 2
    assert [a["outcome"] for a in info["attempts"]] == ["success"]
    assert info["attempts"][0]["affected_tasks"] == [tid] and info["attempts"][0]["recovered_tasks"] == [tid]
    assert c.workers[victim].pid != old_pid and await c.worker_alive(victim)
    assert await c.wait_task(tid, 15) == "completed"
    assert c.tasks[tid].completions == 1  # none run twice to completion
    assert all(t.status == "completed" for t in c.tasks.values())
    assert await c.worker_alive(other)
    group = (await farm.get(f"/api/errors/{info['error_id']}"))[1]
    assert group["resolution_status"] == "resolved" and group["resolution_strategy"] == "worker"


async def test_database_strategy_reconnects_coordinator_and_store(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "builtin_strategies": ["database"]}, workers=1)
    c, integ = farm.coord, farm.integ
    c.db.break_connection()
    integ.store.break_connection()
    tid = await farm.submit(duration=0.05)
    assert await c.wait_task(tid, 10) == "completed"
    await wait_for(lambda: not c.db.ok, 5, "coordinator db failing")
    report = await integ.report_error("queued while the store is down", {"component": "probe"})
    await wait_for(lambda: not integ.store.status().ok, 5, "store failing")
    ok, info = await integ.handle_error(duckdb.ConnectionException("Connection already closed!"),
                                        {"component": "database", "operation": "write_state"})
    assert ok, info
    assert info["strategy_id"] == "database"
    assert sorted(info["attempts"][0]["details"]["reconnected"]) == ["coordinator", "store"]
    await c.db.flush()
    assert {r["task_id"]: r["status"] for r in await c.db.load_tasks()}[tid] == "completed"
    await asyncio.wait_for(integ.flush(), 10)  # the buffered report is written now
    stored = await integ.store.get_group(report.error_id)
    assert stored is not None and stored.aggregated_count == 1


async def test_coordinator_strategy_restarts_the_scheduler_only(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "builtin_strategies": ["coordinator"]}, workers=2)
    c = farm.coord
    busy = await farm.submit(duration=2.0)
    await wait_for(lambda: c.tasks[busy].status == "running", 10, "busy task running")
    busy_worker = c.tasks[busy].worker_id
    assert busy_worker is not None
    incarnation = c.workers[busy_worker].incarnation
    await c.stop_component("scheduler")
    tid = await farm.submit(duration=0.05)
    await asyncio.sleep(0.3)
    assert c.tasks[tid].status == "pending"
    ok, info = await farm.integ.handle_error("scheduler loop stalled", {"component": "scheduler"})
    assert ok, info
    assert info["strategy_id"] == "coordinator" and info["attempts"][0]["details"]["restarted"] == ["scheduler"]
    assert await c.wait_task(tid, 10) == "completed"
    # unrelated work untouched: same worker incarnation, the busy task still on it
    assert c.workers[busy_worker].incarnation == incarnation
    assert c.tasks[busy].worker_id == busy_worker and c.tasks[busy].status in ("running", "completed")
    assert c.tasks[busy].attempt == 1


class Overloaded(ResourceSampler):
    """A machine reading that says the host is overloaded (the sampler is ours, not the coordinator)."""

    def latest(self) -> dict[str, Any]:
        return {"cpu_percent": 99.0, "memory_percent": 50.0}


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_system_strategy_restores_settings_when_interrupted(make_farm, how: str) -> None:
    farm = await make_farm(plugin={"auto_recover": False})
    c = farm.coord
    await c.set_max_concurrency(8)
    strategy = SystemRecoveryStrategy(c, sampler=Overloaded())
    strategy.strategy_id = "system"
    info = {"category": "system_overload", "error_type": "system", "timeout": 30}
    if how == "timeout":
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await strategy.run(info)
    else:
        task = asyncio.create_task(strategy.run(info))
        await asyncio.sleep(0.3)
        assert c.scheduling_paused() and await c.get_max_concurrency() == 4  # it did shed load
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not c.scheduling_paused()
    assert await c.get_max_concurrency() == 8


async def test_system_strategy_never_holds_the_farm_paused_through_an_overload(make_farm) -> None:
    """Found by the soak on a busy machine: an overload the farm did not cause lasted longer than
    the strategy's timeout, and each run paused scheduling for all of it (the learned timeout grew
    to 100 s). Shedding pauses briefly, then runs the farm at the halved limit."""
    farm = await make_farm(plugin={"auto_recover": False}, workers=2)
    c = farm.coord
    await c.set_max_concurrency(4)
    strategy = SystemRecoveryStrategy(c, sampler=Overloaded(), max_pause=0.3, patience=3.0)
    strategy.strategy_id = "system"
    run = asyncio.create_task(strategy.run({"category": "system_overload", "error_type": "system", "timeout": 6}))
    await asyncio.sleep(0.1)
    assert c.scheduling_paused() and await c.get_max_concurrency() == 2
    await wait_for(lambda: not c.scheduling_paused(), 3, "scheduling resumed at the reduced limit")
    assert await c.get_max_concurrency() == 2 and not run.done()
    tids = [await farm.submit(duration=0.05) for _ in range(4)]
    statuses = await asyncio.gather(*(c.wait_task(t, 4) for t in tids))
    assert statuses == ["completed"] * 4 and not run.done()  # work went on while shedding
    result = await run
    assert result.outcome == "failure"  # shedding did not relieve it within patience: not a recovery
    assert result.execution_time < 5.5  # gave up after patience (3 s), not at the 6 s deadline
    assert result.details["resumed_throttled"] is True
    assert not c.scheduling_paused() and await c.get_max_concurrency() == 4


class Relieved(ResourceSampler):
    """Overloaded until the farm has been paused for a moment: shedding relieves it."""

    def __init__(self, coordinator: Any) -> None:
        super().__init__()
        self.c = coordinator
        self.paused_since: float | None = None

    def latest(self) -> dict[str, Any]:
        if self.c.scheduling_paused() and self.paused_since is None:
            self.paused_since = time.monotonic()
        relieved = self.paused_since is not None and time.monotonic() - self.paused_since > 0.3
        return {"cpu_percent": 20.0 if relieved else 99.0, "memory_percent": 40.0}


async def test_system_strategy_succeeds_once_load_is_gone(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False})
    c = farm.coord
    strategy = SystemRecoveryStrategy(c, sampler=Relieved(c), settle=0.2)
    result = await strategy.run({"category": "system_overload", "timeout": 5})
    assert result.outcome == "success" and result.details["shed"]["paused"]
    assert not c.scheduling_paused() and await c.get_max_concurrency() == 0
    # no overload to relieve: nothing to act on, never a success
    calm = SystemRecoveryStrategy(c, sampler=ResourceSampler(), settle=0.2)
    calm.CPU_LIMIT = calm.MEMORY_LIMIT = 101.0
    result = await calm.run({"category": "system_overload", "timeout": 5})
    assert result.outcome == "not_applicable" and not c.scheduling_paused()


async def test_retry_strategy_reruns_the_failed_task(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "builtin_strategies": ["retry"]}, workers=1)
    c = farm.coord
    tid = await farm.submit(duration=0.01, outcome="error")
    assert await c.wait_task(tid, 10) == "failed"
    c.tasks[tid].spec["outcome"] = "pass"  # the flake is gone
    ok, info = await farm.integ.handle_error("simulated infrastructure error",
                                             {"component": "task", "task_id": tid, "worker_id": "worker-1"})
    assert ok and info["strategy_id"] == "retry" and info["recovery_level"] == 1
    assert c.tasks[tid].status == "completed" and c.tasks[tid].attempt == 2
    # a failing re-run is a failure, not a success
    t2 = await farm.submit(duration=0.01, outcome="error")
    assert await c.wait_task(t2, 10) == "failed"
    result = await RetryStrategy(c).run({"task_id": t2, "timeout": 10})
    assert result.outcome == "failure"


async def test_retry_strategy_reruns_a_callable(tmp_path: Path) -> None:
    calls = []

    async def op(x: int) -> int:
        calls.append(x)
        return x * 2

    result = await RetryStrategy(None).run({"callable": op, "args": [21], "kwargs": {}})
    assert result.outcome == "success" and calls == [21]

    def broken() -> None:
        raise ConnectionResetError("still down")

    assert (await RetryStrategy(None).run({"callable": broken})).outcome == "error"


async def test_not_applicable_is_never_a_failure(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False}, workers=1)
    c = farm.coord
    cases = [
        (RetryStrategy(c), {"error_type": "network"}),
        (RetryStrategy(c), {"task_id": "no-such-task"}),
        (WorkerRecoveryStrategy(c), {"error_type": "network"}),
        (WorkerRecoveryStrategy(c), {"worker_id": "no-such-worker"}),
        (DatabaseRecoveryStrategy(c, farm.integ.store), {"error_type": "network", "category": "connection"}),
        (CoordinatorRecoveryStrategy(c), {"error_type": "network", "category": "connection"}),
        (SystemRecoveryStrategy(c), {"category": "disk_full"}),
    ]
    for strategy, info in cases:
        result = await strategy.run(info)
        assert result.outcome == "not_applicable", (strategy, info, result)
        assert strategy.run_counts()["runs"] == 0
    ok, info = await farm.integ.handle_error(ValueError("bad literal"), {"component": "parser"})
    assert not ok and info["attempts"] == []  # no strategy can act on a validation error: none is even asked
    ok, info = await farm.integ.handle_error("worker lost", {"component": "worker", "worker_id": "no-such-worker"})
    assert not ok and [a["outcome"] for a in info["attempts"]] == ["not_applicable"]  # looked, found nothing
    group = await farm.integ.get_recovery_history(info["error_id"])
    assert group is not None and group["current_level"] == 1  # passed over, not escalated as a failure
    assert farm.integ.error_handler.groups.get(info["error_id"]).resolution_status == "open"
    metrics = await farm.integ.get_performance_metrics()
    assert metrics["overall"]["total_executions"] == 0


async def test_no_strategy_touches_files_outside_the_plugins_own(make_farm) -> None:
    old = Path(tempfile.gettempdir()) / f"cp-sentinel-{os.getpid()}.tmp"
    old.write_text("old")
    month_ago = time.time() - 30 * 86400
    os.utime(old, (month_ago, month_ago))
    farm = await make_farm(plugin={"auto_recover": False}, workers=1)
    before = {p.name for p in farm.tmp.iterdir()}
    try:
        for err, ctx in [
            ("worker lost", {"component": "worker", "worker_id": "worker-1"}),
            (duckdb.ConnectionException("closed"), {"component": "database"}),
            ("scheduler stalled", {"component": "scheduler"}),
            ("cpu overload", {"component": "system"}),
            (OSError(28, "No space left on device"), {"component": "disk"}),
        ]:
            await farm.integ.handle_error(err, ctx)
        assert old.exists() and old.read_text() == "old"
        after = {p.name for p in farm.tmp.iterdir()}
        assert before <= after
        assert {n for n in after - before} <= {"errors.duckdb.wal", "coordinator.duckdb.wal"}
    finally:
        old.unlink()


async def test_seed_shaped_coordinator_through_the_adapter(tmp_path: Path) -> None:
    db_path = str(tmp_path / "seed.duckdb")
    seed = SeedShapedCoordinator(duckdb.connect(db_path), db_path)
    seed.add_worker("w1")
    seed.add_worker("w2")
    seed.tasks = {"t1": {"status": "running"}, "t2": {"status": "running"}}
    seed.running_tasks = {"t1": "w1", "t2": "w2"}
    integ = EnhancedErrorHandlingIntegration(seed, validate_config(
        {"database": str(tmp_path / "eh.duckdb"), "auto_recover": False, "escalation_backoff": 0}))
    assert isinstance(integ.actions, SeedCoordinatorAdapter)
    await integ.start()
    try:
        seed.workers["w1"]["last_heartbeat"] = 0.0  # lost for real: no heartbeat since (issue 27 item 1)
        ok, info = await integ.handle_error("worker w1 connection lost", {"component": "worker", "worker_id": "w1"})
        assert ok and info["strategy_id"] == "worker", info
        assert seed.pending_tasks == {"t1"} and seed.running_tasks == {"t2": "w2"}
        assert seed.reconnects == 1 and "w2" in seed.worker_connections
        old_db = seed.db
        # its connection answers: reconnecting it would fix nothing (issue 27 item 1)
        ok, info = await integ.handle_error(duckdb.ConnectionException("Connection already closed!"),
                                            {"component": "database"})
        assert not ok and seed.db is old_db, info
        assert [a["outcome"] for a in info["attempts"] if a["strategy_id"] == "database"] == ["not_applicable"]
        old_db.close()  # now it is broken (another operation, so another group)
        ok, info = await integ.handle_error(duckdb.ConnectionException("Connection already closed!"),
                                            {"component": "database", "operation": "reopen"})
        assert ok and info["strategy_id"] == "database", info
        assert seed.db is not old_db and seed.db.execute("SELECT 1").fetchone() == (1,)  # sql-allowed: the seed's db
    finally:
        await integ.stop()


async def test_custom_strategies_from_config_and_code(tmp_path: Path) -> None:
    integ = EnhancedErrorHandlingIntegration(None, validate_config({
        "database": str(tmp_path / "eh.duckdb"), "auto_recover": False, "builtin_strategies": [],
        "strategies": {"always": "tests.strategies_for_tests:AlwaysWorks"}}))

    class Mine(RecoveryStrategy):
        def __init__(self) -> None:
            # acts on locked databases only: the report below is not one, so "always" recovers it
            # whatever the adaptive policy would explore first
            super().__init__(None, "mine", RecoveryLevel.MEDIUM, categories=["db_locked"])

        async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
            return False

    integ.add_custom_strategy("mine", Mine())
    assert list(integ.recovery_manager.strategies) == ["always", "mine"]
    with pytest.raises(ValueError, match="'retry' is a built-in strategy id"):
        integ.add_custom_strategy("retry", Mine())
    with pytest.raises(ValueError, match="already registered"):
        integ.add_custom_strategy("mine", Mine())
    with pytest.raises(ValueError, match="expected a RecoveryStrategy instance"):
        integ.add_custom_strategy("bad", object())  # type: ignore[arg-type]
    await integ.start()
    try:
        ok, info = await integ.handle_error("anything", {"component": "x"})
        assert ok and info["strategy_id"] == "always"
    finally:
        await integ.stop()
    with pytest.raises(ValueError, match=r"strategies.x: .*does not resolve: no attribute 'Nope'"):
        validate_config({"strategies": {"x": "tests.strategies_for_tests:Nope"}})


async def test_overlapping_load_shedding_restores_the_original_settings(make_farm) -> None:
    """Two groups' system recoveries overlap: the settings from before the first are restored
    when the last ends (each run used to restore what it saw, leaving the farm throttled)."""
    farm = await make_farm(plugin={"auto_recover": False})
    c = farm.coord
    await c.set_max_concurrency(8)
    strategy = SystemRecoveryStrategy(c, sampler=Overloaded())
    strategy.strategy_id = "system"
    first = asyncio.create_task(strategy.run({"category": "system_overload", "timeout": 0.6}))
    await asyncio.sleep(0.2)
    assert c.scheduling_paused() and await c.get_max_concurrency() == 4
    second = asyncio.create_task(strategy.run({"category": "system_overload", "timeout": 1.0}))
    await asyncio.sleep(0.1)
    assert await c.get_max_concurrency() == 4  # joined, not halved again
    assert (await first).outcome == "failure"  # still overloaded when its time ran out
    assert c.scheduling_paused() and await c.get_max_concurrency() == 4  # the second still sheds
    await second
    assert not c.scheduling_paused() and await c.get_max_concurrency() == 8
