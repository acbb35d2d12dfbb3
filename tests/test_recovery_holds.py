"""Issue 13 (SPEC section 9) and issue 12 finding 3: recovery that holds.

A success counts only once it held; a task that fails the same way everywhere is failed for good;
a group whose recoveries keep not holding is stopped; a strategy that cannot act on an error is
neither run nor logged; a recovery in which nothing can act costs next to nothing."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import wait_for
from coordinator_plugins.contract import CoordinatorProtocol, SeedCoordinatorAdapter
from coordinator_plugins.error_handling import (
    CoordinatorRecoveryStrategy,
    EnhancedErrorHandlingIntegration,
    RecoveryLevel,
    RecoveryStrategy,
    WorkerRecoveryStrategy,
    validate_config,
)
from coordinator_plugins.error_handling.recovery.poison import poison_reason
from coordinator_plugins.reference import Coordinator
from tests.simulate import SyntheticStrategy
from tests.strategies_for_tests import SeedShapedCoordinator
from tests.test_reliability import start_serve

L, M = RecoveryLevel.LOW, RecoveryLevel.MEDIUM


def serve_toml(tmp: Path, workers: int) -> Path:
    cfg = tmp / "serve.toml"
    cfg.write_text(
        f'[coordinator]\nhost = "127.0.0.1"\nport = 0\nworkers = {workers}\nheartbeat_interval = 0.3\n'
        f'heartbeat_timeout = 2.0\nscheduler_interval = 0.1\ndatabase = "{tmp / "coord.duckdb"}"\n'
        f'[plugins]\nenabled = ["error_handling"]\n[plugins.error_handling]\ndatabase = "{tmp / "eh.duckdb"}"\n')
    return cfg


async def poll_until(fetch: Any, pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await fetch()
        if pred(value):
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: {value!r}")


# -- finding 1: a real serve, real workers, a task that fails every time ----------------------------
async def test_a_task_failing_everywhere_is_failed_for_good_and_no_worker_is_restarted(tmp_path: Path) -> None:
    proc, url = await start_serve(serve_toml(tmp_path, workers=2))
    try:
        async with aiohttp.ClientSession() as s:
            async def get(path: str) -> Any:
                async with s.get(url + path) as r:
                    assert r.status == 200, path
                    return await r.json()

            await poll_until(lambda: get("/api/status"), lambda st: st["workers"]["active"] == 2, 30, "2 workers")
            async with s.post(url + "/api/tasks", json={"kind": "sim", "outcome": "fail"}) as r:
                failing_test = (await r.json())["task_id"]
            async with s.post(url + "/api/tasks", json={"kind": "sim", "outcome": "error"}) as r:
                poison = (await r.json())["task_id"]
            task = await poll_until(lambda: get(f"/api/tasks/{poison}"),
                                    lambda t: t.get("final") or t["attempt"] > 3, 60, "the poison task failed for good")
            assert task["status"] == "failed" and task.get("final"), task
            assert task["attempt"] <= 3 and len(set(task["failed_on"])) == 2, task  # on both workers
            assert "failed the same way on 3 attempts" in task["failure_reason"]
            # a test that fails is a result, not an infrastructure fault: completed, never retried
            test = await get(f"/api/tasks/{failing_test}")
            assert test["status"] == "completed" and test["result"]["outcome"] == "fail" and test["attempt"] == 1
            groups = (await get("/api/errors?status=all"))["errors"]
            assert [g["category"] for g in groups] == ["task_error"]  # the failed test reported nothing
            group = await poll_until(lambda: get(f"/api/errors/{groups[0]['error_id']}"),
                                     lambda g: g["resolution_status"] == "failed", 20, "its group failed")
            assert "poison task" in group["recovery_details"]["failure_reason"]
            # nothing runs it again, and no worker is restarted for it, however long we look. (Before
            # the verdict a restart may be tried: until a task failed on two workers, the worker it
            # failed on may be at fault; SPEC 9 forbids recovery spent on it after the verdict.)
            settled = await poll_until(lambda: get("/api/status"), lambda st: st["workers"]["active"] == 2, 30,
                                       "2 workers after the verdict")
            pids = {w["worker_id"]: w["pid"] for w in settled["workers_detail"]}
            await asyncio.sleep(4.0)
            again = await get(f"/api/tasks/{poison}")
            assert again["attempt"] == task["attempt"] and again["status"] == "failed"
            status = await get("/api/status")
            # the same processes: nothing restarted a worker since the verdict
            assert {w["worker_id"]: w["pid"] for w in status["workers_detail"]} == pids, status["workers_detail"]
            strategies = await get("/api/recovery/strategies")
            # a restart tried before the verdict did not fix the task: learned, if at all, as a failure
            learned = [(et, e["strategy_id"], e["success_rate"]) for et, v in strategies["error_types"].items()
                       for e in v["strategies"] if e["samples"]]
            assert all(not rate for _, _, rate in learned), learned
            diag = await get("/api/diagnostics")
            assert diag["recovery_metrics"]["poison_tasks"] == 1 and diag["recovery_metrics"]["successes"] == 0
    finally:
        proc.terminate()
        await proc.wait()


def test_poison_needs_the_same_failure_on_two_workers_or_all_of_them() -> None:
    assert poison_reason(["w1", "w2"], 2) is None  # two attempts are not enough
    assert poison_reason(["w1", "w1", "w1"], 2) is None  # one worker of two: the worker may be at fault
    assert poison_reason(["w1", "w1", "w1"], 1) is not None  # the only worker there is
    assert "w1, w2" in (poison_reason(["w1", "w2", "w1"], 3) or "")
    assert poison_reason([None, None, None], 2) is not None  # workers not named: three attempts


async def test_the_worker_strategy_blames_a_worker_only_when_the_task_failed_there_alone(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False}, workers=2)
    c = farm.coord
    tid = await farm.submit(duration=0.01, outcome="error")
    assert await c.wait_task(tid, 10) == "failed"
    strategy = WorkerRecoveryStrategy(c)
    info = {"category": "task_error", "task_ids": [tid], "worker_ids": ["worker-1", "worker-2"], "timeout": 20,
            "task_failures": {tid: ["worker-1", "worker-2"]}}
    result = await strategy.run(info)
    assert result.outcome == "not_applicable" and "follows the task" in (result.error or "")
    assert [c.workers[w].incarnation for w in ("worker-1", "worker-2")] == [1, 1]
    c.tasks[tid].spec["outcome"] = "pass"  # it failed on worker-1 alone: worker-1 is restarted, the task re-run
    result = await strategy.run({**info, "task_failures": {tid: ["worker-1"]}})
    assert result.outcome == "success", result
    assert c.workers["worker-1"].incarnation == 2 and c.workers["worker-2"].incarnation == 1
    assert c.tasks[tid].status == "completed" and result.recovered_tasks == [tid]


async def test_nothing_runs_a_task_that_completed_or_failed_for_good(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False}, workers=1)
    c = farm.coord
    done = await farm.submit(duration=0.01)
    assert await c.wait_task(done, 10) == "completed"
    bad = await farm.submit(duration=0.01, outcome="error")
    assert await c.wait_task(bad, 10) == "failed"
    assert await c.fail_task(bad, "poison") and not await c.fail_task(done, "poison")
    running = await farm.submit(duration=30)
    await wait_for(lambda: c.tasks[running].status == "running", 10, "running")
    assert await c.fail_task(running, "poison")  # failed for good while it ran: off its worker
    for tid in (done, bad, running):
        assert not await c.retry_task(tid)
    assert await c.requeue_worker_tasks("worker-1") == []
    c.register_worker("worker-1", None, 1)  # a re-registration requeues the old incarnation's work
    await c.reload_state()
    await asyncio.sleep(0.3)
    assert c.tasks[done].status == "completed" and c.tasks[done].attempt == 1
    assert [c.tasks[t].status for t in (bad, running)] == ["failed", "failed"]
    assert c.tasks[bad].attempt == 1 and c.tasks[running].attempt == 1 and not c.pending
    # the seed adapter, on a seed-shaped coordinator's dicts
    seed = SeedShapedCoordinator()
    seed.add_worker("w1")
    seed.tasks = {"t1": {"status": "completed"}, "t2": {"status": "running"}}
    seed.running_tasks = {"t2": "w1"}
    adapter = SeedCoordinatorAdapter(seed)
    assert await adapter.fail_task("t2", "poison") and not await adapter.fail_task("t1", "poison")
    assert not await adapter.retry_task("t1") and not await adapter.retry_task("t2")
    assert await adapter.requeue_worker_tasks("w1") == [] and await adapter.reload_state()
    assert seed.pending_tasks == set() and seed.failed_tasks == {"t2"}
    assert (await adapter.task_info("t2") or {})["final"] and seed.tasks["t1"]["status"] == "completed"


# -- provisional successes --------------------------------------------------------------------------------
async def integ_of(tmp_path: Path, strategies: dict[str, RecoveryStrategy], **cfg: Any) -> Any:
    base: dict[str, Any] = {"database": str(tmp_path / "holds.duckdb"), "auto_recover": False,
                            "builtin_strategies": [], "escalation_backoff": 0, "seed": 3}
    base.update(cfg)
    integ = EnhancedErrorHandlingIntegration(None, validate_config(base))
    for sid, s in strategies.items():
        integ.add_custom_strategy(sid, s)
    await integ.start()
    return integ


def synthetic(name: str, level: RecoveryLevel, p: float) -> SyntheticStrategy:
    return SyntheticStrategy(name, level, lambda et, sid: p, random.Random(1))


async def test_a_success_is_learned_only_once_it_held(tmp_path: Path) -> None:
    integ = await integ_of(tmp_path, {"hider": synthetic("hider", L, 1.0), "fixer": synthetic("fixer", M, 1.0)},
                           verify_window=30)
    try:
        ctx = {"component": "net", "error_type": "network"}
        ok, info = await integ.handle_error("link flapping on eth0", ctx)
        assert ok and info["strategy_id"] == "hider" and info["attempts"][0]["verification"] == "pending"
        perf = integ.performance_recovery
        assert ("network", "hider") not in perf.arms  # nothing learned while on probation
        assert (await integ.get_performance_metrics())["overall"]["total_executions"] == 0
        assert integ.recovery_manager.decisions[-1]["outcome"] == "provisional"
        assert (await integ.run_diagnostics())["recovery_metrics"]["successes"] == 0
        # the error recurs within the window: that success was a failure, in everything learned
        again = await integ.report_error("link flapping on eth0", ctx)
        assert again.error_id == info["error_id"]
        arm = perf.arms[("network", "hider")]
        assert (arm.n, arm.successes, arm.total_successes) == (1, 0, 0)
        # the evidence the adaptive policy starts new groups from saw a failure, not a success
        assert arm.evidence.successes == 0 and arm.evidence.failures > 0
        assert integ.recovery_manager.decisions[-1]["outcome"] == "failure"
        metrics = await integ.get_performance_metrics()
        assert metrics["overall"]["total_executions"] == 1 and metrics["strategies"]["hider"]["successes"] == 0
        hist = await integ.get_recovery_history(info["error_id"])
        assert hist is not None and hist["current_level"] == 2 and hist["history"][-1]["verification"] == "recurred"
        # ... and the group's recovery continues at the next level
        ok, info2 = await integ.handle_error("link flapping on eth0", ctx)
        assert ok and [a["level"] for a in info2["attempts"]] == [2]
    finally:
        await integ.stop()


async def test_a_success_that_held_counts_and_zero_counts_at_once(tmp_path: Path) -> None:
    integ = await integ_of(tmp_path, {"fix": synthetic("fix", L, 1.0)}, verify_window=0.3)
    try:
        ok, info = await integ.handle_error("disk quota exceeded on /var", {"component": "disk"})
        assert ok and ("unknown", "fix") not in integ.performance_recovery.arms
        # another worker's occurrence in the group is a new incident, not a recurrence
        await wait_for(lambda: ("unknown", "fix") in integ.performance_recovery.arms, 10, "the success held")
        arm = integ.performance_recovery.arms[("unknown", "fix")]
        assert (arm.n, arm.successes) == (1, 1)
        assert (await integ.get_performance_metrics())["strategies"]["fix"]["successes"] == 1
        assert (await integ.run_diagnostics())["recovery_metrics"]["successes"] == 1
        hist = await integ.get_recovery_history(info["error_id"])
        assert hist is not None and hist["history"][-1]["verification"] == "held"
    finally:
        await integ.stop()
    integ = await integ_of(tmp_path / "z", {"fix": synthetic("fix", L, 1.0)}, verify_window=0,
                           database=str(tmp_path / "zero.duckdb"))
    try:
        ok, info = await integ.handle_error("disk quota exceeded on /var", {"component": "disk"})
        assert ok and "verification" not in info["attempts"][0]
        assert integ.performance_recovery.arms[("unknown", "fix")].successes == 1
    finally:
        await integ.stop()


async def test_a_recurrence_is_an_occurrence_about_what_the_run_fixed(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "builtin_strategies": ["worker"], "verify_window": 30},
                           workers=2)
    integ = farm.integ
    assert await farm.coord.launcher.kill("worker-1")  # lost for real: one that runs is not restarted
    ok, info = await integ.handle_error("worker worker-1 missed heartbeats",
                                        {"component": "worker", "operation": "heartbeat", "worker_id": "worker-1"})
    assert ok and info["verification"] == "pending"
    other = await integ.report_error("worker worker-2 missed heartbeats",
                                     {"component": "worker", "operation": "heartbeat", "worker_id": "worker-2"})
    assert other.error_id == info["error_id"]  # one group, but another worker: not a recurrence
    assert len(integ.recovery_manager.probation) == 1
    await integ.report_error("worker worker-1 missed heartbeats",
                             {"component": "worker", "operation": "heartbeat", "worker_id": "worker-1"})
    assert len(integ.recovery_manager.probation) == 0 and integ.recovery_manager.probation.recurred == 1
    arm = integ.performance_recovery.arms[("worker", "worker")]
    assert (arm.n, arm.successes) == (1, 0)
    status, body = await farm.get("/api/recovery/strategies?error_type=worker")
    assert status == 200
    entry = next(e for e in body["error_types"]["worker"]["strategies"] if e["strategy_id"] == "worker")
    assert entry["samples"] == 1 and entry["success_rate"] == 0.0
    status, metrics = await farm.get("/api/recovery/metrics")
    assert status == 200 and metrics["strategies"]["worker"]["successes"] == 0


# -- max_recoveries_per_group ----------------------------------------------------------------------------
async def test_a_group_whose_recovery_does_not_hold_is_stopped_until_reset(tmp_path: Path) -> None:
    hider = synthetic("hider", L, 1.0)
    integ = await integ_of(tmp_path, {"hider": hider}, auto_recover=True, verify_window=30,
                           max_recoveries_per_group=3, budget_window=600, max_recovery_level=2)
    try:
        ctx = {"component": "cache", "operation": "refresh"}
        report = await integ.report_error("cache refresh failed", ctx)
        rm = integ.recovery_manager
        for n in range(1, 4):  # each "fix" is followed by the same error: it never holds
            await wait_for(lambda: len(rm.probation) == 1 or rm.stopped_groups(), 10, "a provisional success")
            await integ.report_error("cache refresh failed", ctx)
            assert rm.probation.recurred == n
        assert report.error_id in rm.stopped_groups()
        assert report.resolution_status == "failed"
        assert "recovery does not hold" in report.recovery_details["failure_reason"]
        diag = await integ.run_diagnostics()
        assert diag["status"] == "degraded"
        assert any(report.error_id in i and "recovery does not hold" in i for i in diag["issues"]), diag["issues"]
        runs = hider.run_counts()["runs"]
        _, _, recovery = await integ.ingest("cache refresh failed", ctx)
        assert recovery == "off"  # a dead letter: nothing more is spent on it
        ok, info = await integ.handle_error("cache refresh failed", ctx)
        assert not ok and "recovery does not hold" in info["reason"] and hider.run_counts()["runs"] == runs
        assert await integ.reset_recovery_level(report.error_id)
        assert not rm.stopped_groups() and (await integ.run_diagnostics())["status"] == "healthy"
        ok, info = await integ.handle_error("cache refresh failed", ctx)
        assert ok and hider.run_counts()["runs"] == runs + 1
    finally:
        await integ.stop()


async def test_failed_recoveries_count_toward_the_limit_too(tmp_path: Path) -> None:
    never = synthetic("never", L, 0.0)
    integ = await integ_of(tmp_path, {"never": never}, verify_window=0, max_recoveries_per_group=2,
                           budget_window=600, max_recovery_level=1)
    try:
        for _ in range(2):
            ok, _ = await integ.handle_error("nightly export failed", {"component": "export"})
            assert not ok
        ok, info = await integ.handle_error("nightly export failed", {"component": "export"})
        assert not ok and never.run_counts()["runs"] == 2 and "recovery does not hold" in info["reason"]
        diag = await integ.run_diagnostics()
        assert diag["status"] == "degraded" and diag["recovery_metrics"]["stopped_groups"] == [info["error_id"]]
        ok, _ = await integ.handle_error("nightly export failed", {"component": "export"})
        assert integ.error_handler.groups.get(info["error_id"]).resolution_status == "failed"
    finally:
        await integ.stop()
    integ = await integ_of(tmp_path, {"never": synthetic("never", L, 0.0)}, verify_window=0,
                           max_recoveries_per_group=2, budget_window=600, max_recovery_level=1)
    try:  # still stopped after a restart, until resolved
        assert list(integ.recovery_manager.stopped_groups()) == [info["error_id"]]
        assert await integ.resolve_error(info["error_id"], "fixed by hand")
        assert not integ.recovery_manager.stopped_groups()
        assert (await integ.run_diagnostics())["status"] == "healthy"
    finally:
        await integ.stop()


# -- finding 2: a seed-shaped coordinator with nothing to restart ----------------------------------------
async def test_coordinator_strategy_without_anything_to_restart_is_never_a_success(tmp_path: Path) -> None:
    seed = SeedShapedCoordinator()  # no restart_* methods
    strategy = CoordinatorRecoveryStrategy(SeedCoordinatorAdapter(seed))
    info = {"category": "scheduler_stalled", "error_type": "scheduling", "component": "scheduler", "timeout": 5}
    assert (await strategy.run(info)).outcome == "not_applicable"
    integ = EnhancedErrorHandlingIntegration(seed, validate_config(
        {"database": str(tmp_path / "eh.duckdb"), "auto_recover": False, "escalation_backoff": 0}))
    await integ.start()
    try:
        ok, out = await integ.handle_error("scheduler loop stalled", {"component": "scheduler"})
        assert not ok and not any(a["outcome"] == "success" for a in out["attempts"])
        assert integ.error_handler.groups.get(out["error_id"]).resolution_status != "resolved"
    finally:
        await integ.stop()

    class Restartable(SeedShapedCoordinator):
        def __init__(self, healthy: bool | None) -> None:
            super().__init__()
            self.restarts = 0
            if healthy is not None:
                self.scheduler_healthy = lambda: healthy

        def restart_scheduler(self) -> None:  # returns nothing: proves nothing by itself
            self.restarts += 1

    # without a health check nothing is seen broken: nothing restarted (issue 27 item 1)
    for healthy, outcome, restarts in ((None, "not_applicable", 0), (False, "failure", 1)):
        seed2 = Restartable(healthy)
        result = await CoordinatorRecoveryStrategy(SeedCoordinatorAdapter(seed2)).run(info)
        assert result.outcome == outcome and seed2.restarts == restarts, (healthy, result)
    # a scheduler that says it works is not restarted (issue 27 item 1); one that works only
    # after the restart is a success
    seed3 = Restartable(True)
    result = await CoordinatorRecoveryStrategy(SeedCoordinatorAdapter(seed3)).run(info)
    assert result.outcome == "not_applicable" and seed3.restarts == 0, result
    seed3.scheduler_healthy = lambda: seed3.restarts > 0
    result = await CoordinatorRecoveryStrategy(SeedCoordinatorAdapter(seed3)).run(info)
    assert result.outcome == "success" and seed3.restarts == 1, result


# -- finding 5 and issue 12 finding 3: strategies that cannot act are neither run nor asked -------------
class Counting(RecoveryStrategy):
    def __init__(self, **kw: Any) -> None:
        super().__init__(None, "counting", RecoveryLevel.LOW, **kw)
        self.asked = 0

    def is_applicable(self, error_info: dict[str, Any]) -> bool:
        self.asked += 1
        return True

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        return True


class DbOnly(Counting):
    categories = frozenset({"db_connection"})


async def test_only_strategies_that_can_act_on_the_category_are_run_or_logged(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False}, workers=1)
    c = farm.coord
    await c.stop_component("scheduler")
    ok, info = await farm.integ.handle_error("coordinator component scheduler stopped or stalled",
                                             {"component": "scheduler", "operation": "watchdog",
                                              "error_type": "scheduling"})
    assert ok and [(a["strategy_id"], a["outcome"]) for a in info["attempts"]] == [("coordinator", "success")]
    decisions = (await farm.get("/api/recovery/strategies"))[1]["recent_decisions"]
    assert [d["strategy_id"] for d in decisions] == ["coordinator"] and decisions[0]["outcome"] == "provisional"
    assert await c.component_healthy("scheduler")
    assert Counting().applies_to("anything") and not DbOnly().applies_to("connection")
    assert not Counting(categories=["db_query"]).applies_to("db_connection")


async def test_a_recovery_in_which_nothing_can_act_costs_nothing(tmp_path: Path) -> None:
    """Issue 12 finding 3: on an app without a coordinator, nearly every new group started a full
    recovery pass (2,773 recoveries, 24,957 not_applicable outcomes for 3,091 errors)."""
    db_only, anything = DbOnly(), Counting()
    integ = EnhancedErrorHandlingIntegration(None, validate_config({"database": str(tmp_path / "eh.duckdb")}))
    integ.add_custom_strategy("db_only", db_only)
    await integ.start()
    try:
        statuses = set()
        for n in range(300):
            word = "".join(chr(97 + (n // 26**k) % 26) for k in range(3))
            _, _, recovery = await integ.ingest(f"peer reset while sending {word}",
                                                {"component": f"w{n % 7}", "exception_type": "ConnectionResetError"})
            statuses.add(recovery)
        await integ.flush()
        rm = integ.recovery_manager
        assert statuses == {"off"} and db_only.asked == 0  # the built-ins need a coordinator or a task
        assert rm.recoveries == 0 and not rm.inflight and not rm.levels and not rm.counts and not rm.decisions
        assert (await integ.store.totals()).levels == 0
        integ.add_custom_strategy("anything", anything)  # one that can act: recovery happens
        _, _, recovery = await integ.ingest("peer reset while sending zzz", {"component": "w1"})
        assert recovery == "scheduled"
        await wait_for(lambda: rm.recoveries == 1 and not rm.inflight, 10, "the recovery")
        assert db_only.asked == 0 and anything.asked >= 1
    finally:
        await integ.stop()


def test_the_reference_coordinator_and_the_seed_adapter_implement_the_protocol() -> None:
    assert isinstance(SeedCoordinatorAdapter(SeedShapedCoordinator()), CoordinatorProtocol)
    coordinator: Any = Coordinator.__new__(Coordinator)
    assert isinstance(coordinator, CoordinatorProtocol)


@pytest.mark.parametrize("sid", ["retry", "worker", "database", "coordinator", "system"])
def test_builtins_declare_their_categories(sid: str) -> None:
    from coordinator_plugins.error_handling.strategies import BUILTIN_CLASSES

    cats = BUILTIN_CLASSES[sid].categories
    assert cats and not {"test_failure", "validation", "configuration"} & cats
