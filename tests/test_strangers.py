"""Issue 26, item 2: a stranger's registrations never make the coordinator start a process,
only workers it launched (or the operator marked replaceable) are restarted or replaced, local
processes are capped, ``max_tasks`` is bounded, and restarts spend the recovery budget. Real
servers and worker processes."""

from __future__ import annotations

from typing import Any

import psutil
import pytest

from conftest import wait_for
from coordinator_plugins.reference import build_app


def lost_groups(farm: Any) -> list[Any]:
    return [g for g in farm.integ.error_handler.groups if g.context.component == "worker"]


def attempts(farm: Any, error_id: str) -> list[dict[str, Any]]:
    st = farm.integ.recovery_manager.levels.get(error_id)
    return [a for h in (st.history if st else []) for a in h.get("attempts", [])]


async def test_registrations_from_strangers_never_start_a_process(make_farm) -> None:
    """The issue's finding: 100 registrations without a token, each fake gone silent, and
    recovery launched a local "replacement" for each (100 processes, --max-tasks 1000)."""
    farm = await make_farm()  # no token, auto_recover on, every built-in strategy
    answers = [await farm.post("/api/workers/register", {"worker_id": f"fake{i}", "max_tasks": 1000})
               for i in range(8)]
    assert all(status == 200 for status, _ in answers)
    c = farm.coord
    await wait_for(lambda: all(w.status == "lost" for w in c.workers.values()), 30, "every fake lost")
    await wait_for(lambda: lost_groups(farm) and not farm.integ.recovery_manager.inflight
                   and all(attempts(farm, g.error_id) for g in lost_groups(farm)), 60, "their recoveries ran")
    assert c.launcher.starts == 0 and c.launcher.procs == {}
    assert not [p for p in psutil.Process().children(recursive=True) if "worker" in " ".join(p.cmdline())]
    seen = [a for g in lost_groups(farm) for a in attempts(farm, g.error_id) if a.get("strategy_id") == "worker"]
    assert seen and all(a["outcome"] == "not_applicable" for a in seen), seen  # it acted on nothing
    assert all("not launched by this coordinator" in str(a) for a in seen), seen
    info = await c.worker_info("fake0")
    assert info is not None and info["restartable"] is False and "replaceable_workers" in info["why_not_restartable"]
    assert await c.restart_worker("fake0", timeout=1) is None and c.launcher.starts == 0
    # and none is given more tasks at once than the coordinator's own workers (worker_max_tasks)
    assert all(answer.get("max_tasks") == 1 for _, answer in answers), answers
    assert all(w.max_tasks == 1 for w in c.workers.values())


async def test_only_launched_or_replaceable_workers_are_restarted_and_processes_are_capped(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False}, workers=1,
                           coordinator={"replaceable_workers": ["remote-*"], "max_local_workers": 2,
                                        "worker_max_tasks": 2})
    c = farm.coord
    # its own worker is restarted in place
    assert (await c.worker_info("worker-1") or {})["restartable"] is True
    assert await c.restart_worker("worker-1", timeout=30) == "worker-1"
    # a worker the operator marked replaceable is replaced by a local one, of the coordinator's size
    for wid in ("remote-1", "remote-2", "elsewhere-1"):
        assert (await farm.post("/api/workers/register", {"worker_id": wid, "max_tasks": 50}))[0] == 200
    replacement = await c.restart_worker("remote-1", timeout=30)
    assert replacement is not None and replacement.startswith("remote-1-r")
    assert c.workers[replacement].max_tasks == 2 and c.launcher.args[replacement] == ["--max-tasks", "2"]
    # two processes run: the cap is reached, so the next replaceable one is not replaced
    assert c.launcher.running_count() == 2
    info = await c.worker_info("remote-2")
    assert info is not None and info["restartable"] is False and "max_local_workers" in info["why_not_restartable"]
    assert await c.restart_worker("remote-2", timeout=1) is None
    # one it did not launch and nobody marked: never
    assert await c.restart_worker("elsewhere-1", timeout=1) is None
    assert c.launcher.running_count() == 2 and set(c.launcher.procs) == {"worker-1", replacement}
    await c.launcher.stop_all()


def test_local_worker_limits_are_checked_naming_the_key() -> None:
    for table, key in [({"max_local_workers": -1}, "coordinator.max_local_workers"),
                       ({"workers": 4, "max_local_workers": 2}, "coordinator.max_local_workers: must be at least"),
                       ({"replaceable_workers": "gpu-*"}, "coordinator.replaceable_workers"),
                       ({"replaceable_workers": [""]}, "coordinator.replaceable_workers")]:
        with pytest.raises(ValueError, match=key):
            build_app({"coordinator": {"database": ":memory:", **table}})


async def test_worker_restarts_spend_the_recovery_budget(make_farm) -> None:
    """Why the replacements escaped the budget: only level-3+ actions spent it, and a lost
    worker's recovery runs the worker strategy at level 2. Now every restart or replacement
    spends it, at any level."""
    farm = await make_farm(workers=2, plugin={"recovery_budget": 1, "recovery_budget_global": 1,
                                              "budget_window": 3600, "verify_window": 0})
    c, integ = farm.coord, farm.integ
    await c.launcher.kill("worker-1")
    await wait_for(lambda: c.launcher.starts >= 3 and c.workers["worker-1"].status == "active"
                   and not integ.recovery_manager.inflight, 60, "worker-1 restarted by recovery")
    assert integ.budget.status()["granted"] == 1
    await c.launcher.kill("worker-2")
    await wait_for(lambda: integ.recovery_manager.counts.get("budget_exhausted", 0) >= 1, 60,
                   "the budget refusing worker-2's restart")
    assert c.launcher.starts == 3 and c.workers["worker-2"].status == "lost"
    assert integ.budget.status()["refused"] >= 1
