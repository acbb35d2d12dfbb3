"""Issue 29 (SPEC 9): a group never sits at a level where nothing can run. A recurrence of a
provisional success escalates only to a level with an applicable strategy and only after the
group's cooldown (escalation_backoff, doubling per consecutive failure); a group whose every
applicable strategy failed starts again from the lowest level with one after its cooldown, or
is stopped loudly by restart intensity; the start reason names a strategy that can act."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from aiohttp import web

from conftest import wait_for
from coordinator_plugins.error_handling import (
    EnhancedErrorHandlingIntegration,
    ErrorCategory,
    RecoveryLevel,
    RecoveryStrategy,
    setup,
    validate_config,
)

WORKER_CATEGORIES = [ErrorCategory.WORKER_OFFLINE, ErrorCategory.WORKER_CRASH, ErrorCategory.WORKER_HANG]


class RestartWorker(RecoveryStrategy):
    """A user's MEDIUM strategy that says it fixed the worker and fixes nothing (a fake)."""

    def __init__(self, succeeds: bool = True) -> None:
        super().__init__(None, "restart worker", RecoveryLevel.MEDIUM, WORKER_CATEGORIES)
        self.succeeds = succeeds
        self.levels: list[int] = []

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        self.levels.append(error_info["level"])
        return self.succeeds


LOST = "worker w2 stopped heartbeating"
CTX = {"component": "monitor", "worker_id": "w2", "category": "worker_offline"}


async def integ_with(tmp_path: Path, strategy: RecoveryStrategy, **cfg: Any) -> EnhancedErrorHandlingIntegration:
    base: dict[str, Any] = {"database": str(tmp_path / "stuck.duckdb"), "auto_recover": True,
                            "escalation_backoff": 0, "verify_window": 30, "max_recoveries_per_group": 0}
    integ = EnhancedErrorHandlingIntegration(None, validate_config(base | cfg))
    integ.add_custom_strategy("restart_worker", strategy)
    await integ.start()
    return integ


# -- item 2: never parked at a level where nothing can run ------------------------------------------
async def test_a_recurring_group_never_reaches_a_level_with_nothing_to_run(tmp_path: Path) -> None:
    fake = RestartWorker()
    integ = await integ_with(tmp_path, fake)
    rm = integ.recovery_manager
    try:
        for n in range(1, 7):  # the monitor re-reports while w2 stays dead
            report = await integ.report_error(LOST, CTX)
            # where the recurrence left the group: a level at which its strategy can run
            st = rm.levels.get(report.error_id)
            assert (st is None or st.level in (1, 2, 3, 4)) and report.recovery_level in (1, 2, 3, 4), n
            await wait_for(lambda n=n: len(fake.levels) == n, 10, f"recovery {n} of the recurring group")
            await wait_for(lambda r=report: r.error_id not in rm.inflight, 10, "the recovery's end")
            assert rm.levels[report.error_id].level != 5 and report.recovery_level != 5
        # up through the levels that have a candidate, then again from the lowest one
        assert fake.levels == [2, 3, 4, 2, 3, 4], fake.levels
    finally:
        await integ.stop()


async def test_a_recurring_group_is_stopped_loudly_by_restart_intensity_not_parked(tmp_path: Path) -> None:
    fake = RestartWorker()
    integ = await integ_with(tmp_path, fake, max_recoveries_per_group=4, budget_window=600)
    rm = integ.recovery_manager
    try:
        for n in range(1, 5):
            report = await integ.report_error(LOST, CTX)
            await wait_for(lambda n=n: len(fake.levels) == n, 10, f"recovery {n}")
            await wait_for(lambda r=report: r.error_id not in rm.inflight, 10, "the recovery's end")
        await integ.report_error(LOST, CTX)  # the 4th did not hold either: stopped, and it says why
        await wait_for(lambda: report.error_id in rm.stopped_groups(), 10, "the stop")
        assert "recovery does not hold: 4 recoveries of worker:w2" in rm.stopped_groups()[report.error_id]
        assert report.resolution_status.value == "failed" and len(fake.levels) == 4
        assert (await integ.run_diagnostics())["status"] == "degraded"
    finally:
        await integ.stop()


async def test_a_group_whose_strategies_all_failed_starts_again_from_the_lowest_level(tmp_path: Path) -> None:
    failing = RestartWorker(succeeds=False)
    integ = await integ_with(tmp_path, failing, auto_recover=False, verify_window=0)
    try:
        ok, info = await integ.handle_error(LOST, CTX)
        assert not ok and failing.levels == [2, 3, 4], info
        assert info["recovery_level"] == 4  # the highest level at which a strategy ran
        ok, info = await integ.handle_error(LOST, CTX)  # after the cooldown: the whole ladder again
        assert not ok and failing.levels == [2, 3, 4, 2, 3, 4], failing.levels
        assert [a["level"] for a in info["attempts"]] == [2, 3, 4], info["attempts"]
        assert info["start_reason"].startswith("start again at level 2"), info["start_reason"]
    finally:
        await integ.stop()


# -- item 1: a recurrence escalates after escalation_backoff, doubling ---------------------------------
async def test_a_recurrence_escalates_only_after_the_groups_cooldown_which_doubles(tmp_path: Path) -> None:
    fake = RestartWorker()
    integ = await integ_with(tmp_path, fake, escalation_backoff=0.4, escalation_backoff_max=60)
    rm = integ.recovery_manager
    try:
        report = await integ.report_error(LOST, CTX)
        await wait_for(lambda: fake.levels == [2] and report.error_id not in rm.inflight, 10, "the first recovery")
        pauses = []
        for n in (2, 3):
            before = time.monotonic()
            await integ.report_error(LOST, CTX)  # it recurred: the success did not hold
            after = time.monotonic()
            st = rm.levels[report.error_id]
            # not at once: the next level waits for the group's cooldown
            assert report.error_id in rm.deferred and len(fake.levels) == n - 1, fake.levels
            assert before + 0.4 * 2 ** (n - 1) <= st.cooldown_until <= after + 0.4 * 2 ** (n - 1)
            pauses.append(st.cooldown_until - before)
            await wait_for(lambda n=n: len(fake.levels) == n, 30, "the escalated recovery after its cooldown")
            await wait_for(lambda: report.error_id not in rm.inflight, 10, "its end")
        assert fake.levels == [2, 3, 4]
        assert pauses[1] > pauses[0]
    finally:
        await integ.stop()


# -- item 3: the start reason names a strategy that can act --------------------------------------------
async def test_the_start_reason_names_only_a_strategy_that_can_act(tmp_path: Path) -> None:
    app = web.Application()
    # the built-in strategies too: `worker` declares worker_offline but cannot act without a coordinator
    integ = setup(app, None, {"database": str(tmp_path / "e.duckdb"), "auto_recover": False,
                              "escalation_backoff": 0, "verify_window": 0})
    integ.add_custom_strategy("restart_worker", RestartWorker())
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        for n in range(12):  # new groups: each draws its first strategy afresh
            ok, info = await integ.handle_error(f"worker w{n} stopped heartbeating",
                                                CTX | {"component": f"monitor{n}", "worker_id": f"w{n}"})
            assert ok, info
            assert info["start_reason"].startswith("start at level 2 with restart_worker"), info["start_reason"]
            assert [a["strategy_id"] for a in info["attempts"]] == ["restart_worker"], info["attempts"]
    finally:
        await runner.cleanup()


async def test_no_start_reason_names_a_strategy_when_none_can_act(tmp_path: Path) -> None:
    app = web.Application()
    integ = setup(app, None, {"database": str(tmp_path / "e.duckdb"), "auto_recover": False,
                              "escalation_backoff": 0, "verify_window": 0})
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        for n in range(12):
            ok, info = await integ.handle_error(f"worker w{n} stopped heartbeating",
                                                CTX | {"component": f"monitor{n}", "worker_id": f"w{n}"})
            assert not ok and info["attempts"] == [], info
            reason = info["start_reason"]
            assert "retry" not in reason and "worker" not in reason, reason
            assert "no strategy can act" in reason, reason
    finally:
        await runner.cleanup()
