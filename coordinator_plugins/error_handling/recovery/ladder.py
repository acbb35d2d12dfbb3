"""One recovery of a group: up the progressive levels from where the group stands, one
applicable strategy per level (chosen by the selection policy, under a learned timeout, within
the budget from level 3 on and for any strategy above LOW), learning from each run, until one
succeeds or the levels run out.
How it ends (status, level, cooldown, probation) is :class:`~.outcome.RecoveryOutcomes`' part;
when recoveries run is the manager's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from coordinator_plugins.error_handling.config import ErrorHandlingConfig
from coordinator_plugins.error_handling.learning.learn import HeldRun, Learner, Readings
from coordinator_plugins.error_handling.learning.performance import PerformanceTracker
from coordinator_plugins.error_handling.learning.policy import Decision, SelectionPolicy
from coordinator_plugins.error_handling.learning.timeouts import AdaptiveTimeouts
from coordinator_plugins.error_handling.model import ErrorReport
from coordinator_plugins.error_handling.recovery.budget import RecoveryBudget
from coordinator_plugins.error_handling.recovery.candidates import Candidates
from coordinator_plugins.error_handling.recovery.outcome import RecoveryOutcomes
from coordinator_plugins.error_handling.recovery.poison import fails_its_tasks, screen
from coordinator_plugins.error_handling.recovery.state import LevelState, Targets, strategy_info
from coordinator_plugins.error_handling.strategies.base import (
    LEVEL_STRATEGIES,
    RecoveryLevel,
    RecoveryStrategy,
    StrategyResult,
)


class Ladder:
    """Runs recoveries. ``state`` gives a group's level state, ``save_level`` writes it,
    ``defer`` runs a group's recovery again later (when the budget refused a level)."""

    def __init__(
        self,
        config: ErrorHandlingConfig,
        coordinator: Any,
        candidates: Candidates,
        perf: PerformanceTracker,
        policy: SelectionPolicy,
        timeouts: AdaptiveTimeouts,
        budget: RecoveryBudget,
        sampler: Readings,
        learner: Learner,
        outcomes: RecoveryOutcomes,
        persist_group: Callable[[ErrorReport], Any],
        state: Callable[[str], LevelState],
        save_level: Callable[[str, LevelState], None],
        defer: Callable[[ErrorReport, float], None],
    ) -> None:
        self.config = config
        self.coordinator = coordinator
        self.candidates = candidates
        self.perf = perf
        self.policy = policy
        self.timeouts = timeouts
        self.budget = budget
        self.sampler = sampler
        self.learner = learner
        self.outcomes = outcomes
        self.persist_group = persist_group
        self.state = state
        self.save_level = save_level
        self.defer = defer
        self.recoveries = 0  # recoveries in which a strategy ran (or the budget refused one)
        self.poisoned = 0  # tasks failed for good

    def _keys(self, report: ErrorReport) -> tuple[str, list[str]]:
        et = report.error_type.value
        hw = report.context.hardware_id
        if not hw:
            return et, [et]
        hk = f"{et}@{hw}"
        rich = any(k == hk and a.n >= 3 for (k, _), a in self.perf.arms.items())
        return (hk if rich else et), [et, hk]

    async def _screen(self, report: ErrorReport, targets: Targets, info: dict[str, Any]) -> bool:
        """Drop target tasks that must never run again, failing poison tasks for good. True when
        nothing is left to act on: every task of a task's failure is final."""
        targets.tasks, verdicts = await screen(self.coordinator, report, targets.tasks)
        if verdicts:
            self.poisoned += len(verdicts)
            info.setdefault("poison_tasks", []).extend(verdicts)
        return targets.had_tasks and not targets.tasks and fails_its_tasks(report.category.value)

    async def run(self, report: ErrorReport) -> tuple[bool, dict[str, Any]]:
        cfg = self.config
        st = self.state(report.error_id)
        key, record_keys = self._keys(report)
        started = time.perf_counter()
        info: dict[str, Any] = {
            "error_id": report.error_id,
            "error_type": report.error_type.value,
            "category": report.category.value,
            "success": False,
            "strategy_id": None,
            "strategy_name": None,
            "recovery_level": st.level,
            "execution_time": 0.0,
            "attempts": [],
            "start_reason": None,
            "recovery_id": None,
        }
        if st.stopped:  # a dead letter: nothing runs until the group is resolved or reset
            info["reason"] = st.stopped
            return False, info
        targets = Targets.take(report)
        info["targets"] = {"workers": list(targets.workers), "tasks": list(targets.tasks)}
        if self.outcomes.over_intensity(report, st, targets):  # Erlang's restart intensity, per target
            info["reason"] = st.stopped
            return False, info
        if await self._screen(report, targets, info):
            return self.outcomes.nothing_left(report, st, info)
        level = st.level
        first: Decision | None = None  # a first decision the policy made with the start level
        if st.recoveries == 0 and level == 1:
            # the first strategy is chosen among every one whose check says it can act on this
            # error below L5 (one that cannot act is never named); the start level follows from it
            # (levels below are skipped, not run)
            able = await self._able(report, targets)
            start = self.policy.start(key, able, cfg.max_recovery_level)
            level, first = max(1, min(start.level, cfg.max_recovery_level)), start.decision
            info["start_reason"] = start.reason if able else (
                "no strategy can act on it now (no applicable strategy below level 5): start at level 1")
            if level > 1:
                info["skipped_levels"] = list(range(1, level))
        elif st.rewind:
            # every level with an applicable strategy was tried and did not hold: after the
            # cooldown, the ladder again from the lowest level with one (restart intensity bounds it)
            levels = self._levels(await self._able(report, targets))
            top, level = st.level, (levels[0] if levels else 1)
            st.rewind = False
            info["start_reason"] = (f"start again at level {level}, the lowest with a strategy that can act: "
                                    f"every level up to {top} was tried and did not hold")
        backoff = cfg.escalation_backoff
        tried: set[str] = set()
        success = False
        poisoned = False
        held: tuple[HeldRun, int, StrategyResult, int | None] | None = None
        later: list[tuple[HeldRun, int]] = []  # runs learned once it is known the task is not poison
        # The levels to walk: up from the start; when the start skipped levels and nothing above
        # them could act (the first choice found nothing to act on), the skipped ones after all.
        walk = list(range(level, cfg.max_recovery_level + 1))
        skipped = list(range(1, level))
        i = 0
        try:
            while i < len(walk):
                level = walk[i]
                result = await self._run_level(report, level, key, record_keys, tried, info, targets, st, first)
                first = None
                if result is None:  # no applicable strategy: passed over
                    i += 1
                    if i == len(walk) and skipped and all(a["outcome"] == "not_applicable" for a in info["attempts"]):
                        walk += skipped
                        info["skipped_levels"] = []
                        skipped = []
                    continue
                info["recovery_level"] = level
                if result.outcome == "budget_exhausted":
                    break
                run = info.pop("_held", None)
                if result.success:
                    success = True
                    info.update(
                        success=True,
                        strategy_id=result.strategy_id,
                        strategy_name=self.candidates.strategies[result.strategy_id].name,
                    )
                    if run is not None and cfg.verify_window > 0:
                        # learned when its verify window ends; should it recur, the group goes on at
                        # the next level with an applicable strategy (none: it starts again)
                        above = [lv for lv in self._levels(await self._able(report, targets)) if lv > level]
                        held = (run, level, result, above[0] if above else None)
                    else:
                        if run is not None:
                            self.learner.apply(run)
                        self.policy.record_level(key, level, True)
                    break
                if run is None:
                    self.policy.record_level(key, level, False)
                else:
                    later.append((run, level))
                st.level = level  # the highest level reached; the next recovery starts here
                self.save_level(report.error_id, st)
                if await self._screen(report, targets, info):
                    poisoned = True  # the task's own problem: no further level is spent on it
                    break
                if level >= cfg.max_recovery_level:
                    break
                if backoff > 0:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, cfg.escalation_backoff_max)
                i += 1
        finally:
            info.pop("_held", None)
            info.pop("_found_nothing", None)
            for run, lv in later:
                if not poisoned:
                    self.learner.apply(run)
                    self.policy.record_level(key, lv, False)
            if info["attempts"]:
                self.outcomes.ended(report, st, info, success, poisoned, started, key, held, targets)
        return success, info

    async def _able(self, report: ErrorReport, targets: Targets) -> list[RecoveryStrategy]:
        """The strategies of the error's category, up to ``max_recovery_level``, whose check says
        they can act on it now."""
        allowed = {lv for n in range(1, self.config.max_recovery_level + 1) for lv in LEVEL_STRATEGIES[n]}
        probe = strategy_info(report, 1, 0.0, targets)
        return [s for s in self.candidates.for_category(report.category.value)
                if s.level in allowed and await s._eh_applicable(probe)]

    def _levels(self, able: list[RecoveryStrategy]) -> list[int]:
        """The levels (ascending) at which one of ``able`` may run."""
        return [n for n in range(1, self.config.max_recovery_level + 1)
                if any(s.level in LEVEL_STRATEGIES[n] for s in able)]

    async def _run_level(
        self,
        report: ErrorReport,
        level: int,
        key: str,
        record_keys: list[str],
        tried: set[str],
        info: dict[str, Any],
        targets: Targets,
        st: LevelState,
        first: Decision | None = None,
    ) -> StrategyResult | None:
        allowed = LEVEL_STRATEGIES[level]
        candidates = [s for s in self.candidates.for_category(report.category.value) if s.level in allowed]
        if not candidates:
            return None
        probe = strategy_info(report, level, 0.0, targets)
        nothing = info.setdefault("_found_nothing", set())  # looked in this recovery, found nothing
        candidates = [s for s in candidates if s.strategy_id not in nothing and await s._eh_applicable(probe)]
        while candidates:
            if first is not None and any(s.strategy_id == first.strategy_id for s in candidates):
                decision = first
            else:
                decision = self.policy.choose(candidates, key, level, tried)
            first = None
            strategy = self.candidates.strategies[decision.strategy_id]
            # Budgeted: every level-3+ action, and below it every strategy above LOW (a worker's
            # restart or replacement at level 2 starts a process as much as one at level 3).
            budgeted = level >= 3 or strategy.level is not RecoveryLevel.LOW
            if budgeted and not await self.budget.acquire(report.context.component):
                wait = self.budget.retry_after(report.context.component)
                self.learner.attempt(info, decision, "budget_exhausted", 0.0, {"retry_after": round(wait, 3)})
                self.defer(report, wait)
                return StrategyResult(strategy.strategy_id, "budget_exhausted")
            # The level a group shows (API, dashboard) is the level of the strategy running now.
            before_level = (st.level, report.recovery_level)
            shown = report.recovery_level != level
            report.recovery_level = level
            if st.level != level:
                st.level = level
            if not info["attempts"]:  # the first strategy to run: this is a recovery now
                st.recoveries += 1
                self.recoveries += 1
                info["recovery_id"] = self.recoveries
                report.retrying()
                self.persist_group(report)
            elif shown:
                self.persist_group(report)
            timeout = self.timeouts.get(report.error_type.value, strategy.strategy_id)
            before = self.sampler.latest()
            t0 = time.perf_counter()
            # the lists a strategy records what it touched in, kept here: a run that times out
            # still tells what it did
            sinfo = strategy_info(report, level, timeout, targets)
            sinfo.update(affected_tasks=[], recovered_tasks=[], details={})
            try:
                async with asyncio.timeout(timeout):
                    result = await strategy.run(sinfo, checked=True)
            except TimeoutError:
                result = StrategyResult(strategy.strategy_id, "timeout", time.perf_counter() - t0,
                                        list(sinfo["affected_tasks"]), list(sinfo["recovered_tasks"]),
                                        dict(sinfo["details"]))
            tried.add(strategy.strategy_id)
            if result.outcome == "not_applicable":  # it looked and found nothing to act on
                st.level, report.recovery_level = before_level  # passed over: not a level reached
                if budgeted:
                    self.budget.refund(report.context.component)  # nothing was done
                self.learner.attempt(info, decision, "not_applicable", result.execution_time,
                                     {"error": result.error} if result.error else {})
                nothing.add(strategy.strategy_id)
                candidates = [s for s in candidates if s is not strategy]
                continue
            hold = bool(targets.tasks) and fails_its_tasks(report.category.value)
            run = await self.learner.learn(report, level, record_keys, strategy, result, before, decision, info,
                                           hold)
            if run is not None:
                info["_held"] = run
            return result
        return None

