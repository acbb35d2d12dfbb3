"""Issue 12, finding 2: a flood of unique error groups with the default config never jams the
store. Its cause: every group whose recovery waited for the budget was deferred (without bound),
and each postponement appended an entry to the group's level history and upserted the whole
history again, so the recovery-state writes grew with every budget window until DuckDB ran out
of memory. Small numbers here, nothing timed: the structures stay within their caps, no level
history records a postponement, and the writer's queue drains.
A real reference coordinator with the plugin's defaults (auto_recover on); nothing is mocked."""

from __future__ import annotations

import asyncio
import random
import string

from conftest import wait_for
from coordinator_plugins.error_handling.recovery import manager as manager_module


def words(rng: random.Random) -> str:
    return " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 9))) for _ in range(6))


async def test_a_flood_of_unique_groups_stays_bounded(make_farm, monkeypatch) -> None:
    monkeypatch.setattr(manager_module, "MAX_DEFERRED", 40)
    # a short budget window: the deferred recoveries come back several times during the test
    # the budgeted action: a HIGH strategy that acts each time (the built-ins find nothing broken here)
    farm = await make_farm(plugin={"budget_window": 0.3, "recovery_budget": 1, "recovery_budget_global": 1,
                                   "builtin_strategies": [], "strategies": {"acts": "tests.strategies_for_tests:HighActs"}})
    integ = farm.integ
    assert integ is not None and integ.config.auto_recover
    rm = integ.recovery_manager
    rng = random.Random(7)
    n = 400
    for i in range(n):  # unique messages without digits: each one a new group
        await integ.report_error(f"flood {words(rng)}", {"component": ("scheduler", "network")[i % 2],
                                                         "operation": "run"})
        if i % 50 == 0:
            await asyncio.sleep(0.05)  # let recoveries run and the budget windows pass
            assert len(rm.deferred) <= 40
    # several budget windows: every deferred group wakes, is refused again, and is deferred again
    for _ in range(8):
        await asyncio.sleep(0.35)
        assert len(rm.deferred) <= 40
    assert rm.recoveries >= 1 and rm.shed > 0  # the flood did need the budget and the cap
    assert rm.counts.get("budget_exhausted", 0) > 40  # postponements happened, again and again
    await asyncio.wait_for(integ.flush(), 30)
    await wait_for(lambda: integ.store.status().pending_writes == 0, 30, "the writer's queue drained")
    status = integ.store.status()
    assert status.ok and status.dropped_writes == 0 and status.reconnects == 0
    levels = (await integ.store.load_state(regression_window=1e9, max_groups=10**9)).levels
    # a postponement is not a recovery: no level row was written for one, no history holds one
    for lv in levels:
        for entry in lv.history:
            assert any(a["outcome"] != "budget_exhausted" for a in entry["attempts"]), entry
    totals = await integ.store.totals()
    assert totals.levels <= rm.recoveries
    assert totals.groups >= n


async def test_level_states_in_memory_stay_within_the_group_cap(make_farm) -> None:
    """Level states are kept for at most ``max_groups_in_memory`` groups; the least recently
    saved idle ones are forgotten first (they are in the database), a busy one never."""
    farm = await make_farm(plugin={"max_groups_in_memory": 100})
    assert farm.integ is not None
    rm = farm.integ.recovery_manager
    keep = rm.state("stopped-one")
    keep.stopped = "recovery does not hold"
    for i in range(250):
        rm.state(f"group-{i}")
        assert len(rm.levels) <= 100
    assert "stopped-one" in rm.levels and "group-249" in rm.levels
    assert rm.forgotten_levels >= 150


async def test_a_read_answers_503_with_retry_after_while_the_store_is_not_writing(make_farm, monkeypatch) -> None:
    """GET /api/errors flushes first; with the writer failing that flush never ended (issue 12:
    it hung past 40 s). Now every read has a deadline: a JSON 503 with Retry-After, and once the
    store writes again the same read answers 200."""
    from coordinator_plugins.error_handling.web import api

    monkeypatch.setattr(api, "READ_DEADLINE", 1.0)
    farm = await make_farm(plugin={"auto_recover": False})
    integ = farm.integ
    assert integ is not None
    integ.store.auto_reconnect_after = 3600  # the store does not heal by itself during the test
    integ.store.break_connection()
    await integ.report_error("written while the store is down", {"component": "svc"})
    async with farm.session.get(farm.url + "/api/errors") as r:
        assert r.status == 503, await r.text()
        assert r.headers["Retry-After"] == "5"
        assert (await r.json())["code"] == "store_busy"
    assert await integ.store.reconnect()
    status, body = await farm.get("/api/errors")
    assert status == 200  # the store's own error (its write failed) is reported beside it
    assert "written while the store is down" in [e["message"] for e in body["errors"]]


def test_marking_an_evicted_group_does_not_break_eviction() -> None:
    """A recovery that ends after its group was evicted marks the group resolved; that mark
    used to enter the eviction order of a group the index no longer held, and the next
    eviction raised KeyError (a 500 on every POST past max_groups_in_memory in the flood)."""
    from coordinator_plugins.error_handling.intake.group import GroupIndex
    from coordinator_plugins.error_handling.intake.handler import ErrorHandler

    handler = ErrorHandler(store=None, max_groups=100)  # type: ignore[arg-type]  # build() does no I/O
    rng = random.Random(3)
    first, _, _ = handler.build(f"first {words(rng)}", {"component": "c"})
    for _ in range(150):
        handler.build(f"more {words(rng)}", {"component": "c"})
    index: GroupIndex = handler.groups
    # evicted (index.get would bring it back: an evicted group still held is the same object)
    assert all(r.error_id != first.error_id for r in index)
    first.resolve("late recovery")
    index.mark(first)  # as persist() does when the recovery ends
    for _ in range(150):
        handler.build(f"after {words(rng)}", {"component": "c"})
    assert len(index) == 100
