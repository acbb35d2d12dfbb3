"""Progressive recovery per error group: choose, run under a learned timeout, verify, record,
learn, and escalate through the five levels. One recovery per group at a time.

Recovery that holds (SPEC section 9): a success is learned only once it held for
``verify_window`` (:mod:`.verify`); a task that fails the same way on several workers is failed
for good (:mod:`.poison`); a group whose recoveries keep not holding is stopped after
``max_recoveries_per_group`` of them per ``budget_window``, as an Erlang supervisor stops past
its restart intensity, until it is resolved or reset. A recovery in which no strategy can act
costs next to nothing: no task, no level walk, no write."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from coordinator_plugins.error_handling.config import BUILTIN_STRATEGY_IDS, ErrorHandlingConfig
from coordinator_plugins.error_handling.fleet.lease import LeaseKeeper
from coordinator_plugins.error_handling.learning.learn import HeldRun, Learner
from coordinator_plugins.error_handling.learning.performance import PerformanceTracker
from coordinator_plugins.error_handling.learning.policy import Decision, SelectionPolicy
from coordinator_plugins.error_handling.learning.timeouts import AdaptiveTimeouts
from coordinator_plugins.error_handling.model import ErrorReport, ResolutionStatus, utcnow
from coordinator_plugins.error_handling.observe.sampler import ResourceSampler
from coordinator_plugins.error_handling.recovery.budget import RecoveryBudget
from coordinator_plugins.error_handling.recovery.candidates import Candidates
from coordinator_plugins.error_handling.recovery.leased import recover_leased
from coordinator_plugins.error_handling.recovery.outcome import RecoveryOutcomes
from coordinator_plugins.error_handling.recovery.poison import screen
from coordinator_plugins.error_handling.recovery.state import LevelMap, LevelState, Targets, strategy_info
from coordinator_plugins.error_handling.recovery.verify import Probation
from coordinator_plugins.error_handling.storage.records import LevelRecord
from coordinator_plugins.error_handling.strategies.base import (
    LEVEL_STRATEGIES,
    TASK_CATEGORIES,
    RecoveryLevel,
    RecoveryStrategy,
    StrategyResult,
)

logger = logging.getLogger(__name__)
MAX_DEFERRED = 1000  # groups whose recovery waits for the budget or a cooldown at once


class RecoveryManager(RecoveryOutcomes):
    def __init__(
        self,
        config: ErrorHandlingConfig,
        coordinator: Any,
        perf: PerformanceTracker,
        policy: SelectionPolicy,
        timeouts: AdaptiveTimeouts,
        budget: RecoveryBudget,
        sampler: ResourceSampler,
        persist_group: Callable[[ErrorReport], Any],
        save_level: Callable[[LevelRecord], Any],
    ) -> None:
        self.config = config
        self.coordinator = coordinator
        self.perf = perf
        self.policy = policy
        self.timeouts = timeouts
        self.budget = budget
        self.sampler = sampler
        self.persist_group = persist_group
        self.save_level = save_level
        self.candidates = Candidates()
        self.strategies: dict[str, RecoveryStrategy] = self.candidates.strategies
        self.levels: LevelMap = LevelMap()
        self.inflight: dict[str, asyncio.Task[tuple[bool, dict[str, Any]]]] = {}
        self.deferred: dict[str, asyncio.TimerHandle] = {}
        self.learner = Learner(coordinator, perf, timeouts, sampler, config.verify_window)
        self.decisions = self.learner.decisions
        self.counts = self.learner.counts
        self.probation = Probation(config.verify_window, self._verified)
        self.recoveries = 0
        self.successes = 0  # successes that held (at once when verify_window is 0)
        self.poisoned = 0  # tasks failed for good
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        # told when a provisional success ends: {error_id, recovery_id, strategy_id, level, held}
        self.verify_listeners: list[Callable[[dict[str, Any]], None]] = []
        # (time, error type) of recent reports that no registered strategy could act on
        self.unactionable: deque[tuple[float, str]] = deque(maxlen=1000)
        self.shed = 0  # recoveries not deferred because MAX_DEFERRED groups already wait
        self.forgotten_levels = 0  # level states dropped from memory (kept in the database)
        self.closed = False
        self.lease: LeaseKeeper | None = None  # a fleet's leases (SPEC 10): one recovery per group fleet-wide

    # -- registration -------------------------------------------------------------------------
    def add_strategy(self, strategy_id: str, strategy: RecoveryStrategy) -> None:
        self.candidates.add(strategy_id, strategy)

    def add_custom_strategy(self, strategy_id: str, strategy: RecoveryStrategy) -> None:
        """Register a custom strategy, as the seed design shows; a built-in id is refused."""
        if strategy_id in BUILTIN_STRATEGY_IDS:
            raise ValueError(f"strategy_id: {strategy_id!r} is a built-in strategy id")
        self.add_strategy(strategy_id, strategy)

    def levels_with_candidates(self, category: str | None = None) -> list[int]:
        """The progressive levels at which at least one registered strategy (that can act on
        ``category``, when given) may run."""
        return self.candidates.levels(category)

    # -- levels ----------------------------------------------------------------------------------
    def state(self, error_id: str) -> LevelState:
        st = self.levels.get(error_id)
        if st is None:
            st = self.levels[error_id] = LevelState()
            if len(self.levels) > self.config.max_groups_in_memory:
                self._forget_levels()
        elif time.time() - st.last_updated > self.config.level_reset_after and error_id not in self.inflight:
            st.level = 1  # a quiet period resets the level
        return st

    def _forget_levels(self) -> None:
        """Keep the level states in memory within ``max_groups_in_memory``: forget the least
        recently saved tenth of them that nothing holds (no recovery running or deferred, not on
        probation, not stopped). Each is in the database; a forgotten group starts again at
        level 1, as it would after ``level_reset_after`` of quiet."""
        busy = set(self.inflight) | set(self.deferred) | set(self.probation.pending)
        target = len(self.levels) - int(self.config.max_groups_in_memory * 0.9)
        drop: list[str] = []
        for error_id, st in self.levels.items():  # oldest saved first: _save_level moves to the end
            if len(drop) >= target:
                break
            if error_id not in busy and not st.stopped:
                drop.append(error_id)
        for error_id in drop:
            del self.levels[error_id]
        self.forgotten_levels += len(drop)

    def _save_level(self, error_id: str, st: LevelState) -> None:
        if self.levels.get(error_id) is st:  # most recently saved last (see _forget_levels)
            del self.levels[error_id]
            self.levels[error_id] = st
        st.last_updated = time.time()
        self.save_level(LevelRecord(error_id, st.level, utcnow(), tuple(st.history)))

    def reset_level(self, error_id: str) -> bool:
        """Level 1 again; a group whose recovery was stopped may recover again."""
        st = self.levels.get(error_id)
        if st is None:
            return False
        st.restart()
        self._save_level(error_id, st)
        return True

    def stopped_groups(self) -> dict[str, str]:
        """Groups whose recovery was stopped because it did not hold: error id -> reason."""
        return dict(self.levels.stopped)

    def active_levels(self) -> dict[str, int]:
        """Groups whose recovery level is above 1: error id -> level (kept as levels change)."""
        return dict(self.levels.active)

    # -- entry points ---------------------------------------------------------------------------------
    def schedule(self, report: ErrorReport) -> str:
        """Start recovery in the background; "in_progress" when one already runs for the group.

        A group already waiting for the budget, or cooling down after a failed recovery, gets
        its recovery then, not now: an error storm must not become a recovery storm."""
        if report.error_id in self.inflight:
            return "in_progress"
        if self.closed:
            return "off"
        if report.error_id in self.deferred:
            return "scheduled"
        st = self.levels.get(report.error_id)
        if st is not None and st.stopped:
            return "off"  # a dead letter until it is resolved or reset
        if not self.candidates.may_act(report, self.config.max_recovery_level):
            # no strategy can act on it: no task, no walk, no write; remembered for the operator
            self.unactionable.append((time.time(), report.error_type._value_))
            return "off"
        wait = st.cooldown_until - time.monotonic() if st is not None else 0.0
        if wait > 0:
            self._defer(report, wait)
            return "scheduled"
        self._start(report)
        return "scheduled"

    def observe(self, report: ErrorReport, worker_id: Any, task_id: Any) -> None:
        """Every occurrence passes here before recovery is scheduled: one that concerns a
        provisional success of its group makes that success a failure (see :meth:`_verified`)."""
        if self.probation.pending:
            self.probation.observe(report.error_id, worker_id, task_id)

    def _start(self, report: ErrorReport) -> asyncio.Task[tuple[bool, dict[str, Any]]]:
        handle = self.deferred.pop(report.error_id, None)
        if handle is not None:
            handle.cancel()
        work = self._recover(report) if self.lease is None else recover_leased(self, self.lease, report)
        task = asyncio.create_task(work, name=f"recover-{report.error_id[:8]}")
        self.inflight[report.error_id] = task
        task.add_done_callback(lambda t: self._finished(report, t))
        return task

    def _finished(self, report: ErrorReport, task: asyncio.Task[Any]) -> None:
        error_id = report.error_id
        if self.inflight.get(error_id) is task:
            del self.inflight[error_id]
        if not task.cancelled() and task.exception() is not None:
            logger.error("recovery of %s crashed: %r", error_id, task.exception())
        # Occurrences that joined while it ran may name workers or tasks it did not act on.
        if not self.config.auto_recover or task.cancelled() or self.closed:
            return
        st = self.levels.get(error_id)
        if st is not None and st.stopped:
            return
        if report.has_targets:  # schedule() respects the budget's deferral and the cooldown
            self.schedule(report)
        elif report.resolution_status is ResolutionStatus.FAILED:
            # Like a supervisor, try again after the cooldown: the fault may not report itself
            # again (a stopped loop, a dead process), and a failed group must not wait forever.
            if st is not None and st.cooldown_until:
                self._defer(report, max(0.0, st.cooldown_until - time.monotonic()))

    async def recover(self, report: ErrorReport) -> tuple[bool, dict[str, Any]]:
        """Recover now, or join the recovery already running for this group."""
        task = self.inflight.get(report.error_id) or self._start(report)
        return await asyncio.shield(task)

    # -- the ladder --------------------------------------------------------------------------------
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
        return targets.had_tasks and not targets.tasks and report.category.value in TASK_CATEGORIES

    async def _recover(self, report: ErrorReport) -> tuple[bool, dict[str, Any]]:
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
        if await self._screen(report, targets, info):
            return self._nothing_left(report, st, info)
        level = st.level
        first: Decision | None = None  # a first decision the policy made with the start level
        if st.recoveries == 0 and level == 1:
            # the first strategy is chosen among every one that can act on the category below L5;
            # the start level follows from it (levels below are skipped, not run)
            start = self.policy.start(key, self.candidates.for_category(report.category.value),
                                      cfg.max_recovery_level)
            level, first = max(1, min(start.level, cfg.max_recovery_level)), start.decision
            info["start_reason"] = start.reason
            if level > 1:
                info["skipped_levels"] = list(range(1, level))
        backoff = cfg.escalation_backoff
        tried: set[str] = set()
        success = False
        poisoned = False
        held: tuple[HeldRun, int, StrategyResult] | None = None
        later: list[tuple[HeldRun, int]] = []  # runs learned once it is known the task is not poison
        try:
            while level <= cfg.max_recovery_level:
                result = await self._run_level(report, level, key, record_keys, tried, info, targets, st, first)
                first = None
                if result is None:  # no applicable strategy: passed over
                    level += 1
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
                        strategy_name=self.strategies[result.strategy_id].name,
                    )
                    if run is not None and cfg.verify_window > 0:
                        held = (run, level, result)  # learned when its verify window ends
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
                self._save_level(report.error_id, st)
                if await self._screen(report, targets, info):
                    poisoned = True  # the task's own problem: no further level is spent on it
                    break
                if level >= cfg.max_recovery_level:
                    break
                if backoff > 0:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, cfg.escalation_backoff_max)
                level += 1
        finally:
            info.pop("_held", None)
            info.pop("_found_nothing", None)
            for run, lv in later:
                if not poisoned:
                    self.learner.apply(run)
                    self.policy.record_level(key, lv, False)
            if info["attempts"]:
                self._ended(report, st, info, success, poisoned, started, key, held, targets)
        return success, info

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
        candidates = [s for s in candidates if s.strategy_id not in nothing and await s.applicable(probe)]
        while candidates:
            if first is not None and any(s.strategy_id == first.strategy_id for s in candidates):
                decision = first
            else:
                decision = self.policy.choose(candidates, key, level, tried)
            first = None
            strategy = self.strategies[decision.strategy_id]
            # Budgeted: every level-3+ action, and below it every strategy above LOW (a worker's
            # restart or replacement at level 2 starts a process as much as one at level 3).
            budgeted = level >= 3 or strategy.level is not RecoveryLevel.LOW
            if budgeted and not await self.budget.acquire(report.context.component):
                wait = self.budget.retry_after(report.context.component)
                self.learner.attempt(info, decision, "budget_exhausted", 0.0, {"retry_after": round(wait, 3)})
                self._defer(report, wait)
                return StrategyResult(strategy.strategy_id, "budget_exhausted")
            if not info["attempts"]:  # the first strategy to run: this is a recovery now
                st.recoveries += 1
                self.recoveries += 1
                info["recovery_id"] = self.recoveries
                report.retrying()
                self.persist_group(report)
            timeout = self.timeouts.get(report.error_type.value, strategy.strategy_id)
            before = self.sampler.latest()
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(timeout):
                    result = await strategy.run(strategy_info(report, level, timeout, targets), checked=True)
            except TimeoutError:
                result = StrategyResult(strategy.strategy_id, "timeout", time.perf_counter() - t0)
            tried.add(strategy.strategy_id)
            if result.outcome == "not_applicable":  # it looked and found nothing to act on
                if budgeted:
                    self.budget.refund(report.context.component)  # nothing was done
                self.learner.attempt(info, decision, "not_applicable", result.execution_time,
                                     {"error": result.error} if result.error else {})
                nothing.add(strategy.strategy_id)
                candidates = [s for s in candidates if s is not strategy]
                continue
            hold = bool(targets.tasks) and report.category.value in TASK_CATEGORIES
            run = await self.learner.learn(report, level, record_keys, strategy, result, before, decision, info,
                                           hold)
            if run is not None:
                info["_held"] = run
            return result
        return None

    def _defer(self, report: ErrorReport, wait: float) -> None:
        """Run this group's recovery again once the budget allows. At most MAX_DEFERRED groups
        wait at once: past that (a flood of new groups that all need a level the budget holds
        back) the newest is not deferred but counted in ``shed``; it stays open and its next
        occurrence schedules its recovery again. Each deferred group costs a timer and a wake-up
        per budget window, and the budget grants only a few of them each window anyway."""
        if report.error_id in self.deferred or self.closed:
            return
        if len(self.deferred) >= MAX_DEFERRED:
            self.shed += 1
            return
        loop = asyncio.get_running_loop()

        def again() -> None:
            self.deferred.pop(report.error_id, None)
            st = self.levels.get(report.error_id)
            if st is not None and st.stopped:
                return
            if not self.closed and report.is_open and report.error_id not in self.inflight:
                self._start(report)
            elif report.is_open and report.error_id in self.inflight:
                self._defer(report, 0.5)

        self.deferred[report.error_id] = loop.call_later(max(0.05, wait + 0.01), again)

    async def close(self) -> None:
        """Cancel deferred and running recoveries; strategies restore what they changed."""
        self.closed = True
        self.probation.close()
        for handle in self.deferred.values():
            handle.cancel()
        self.deferred.clear()
        tasks = list(self.inflight.values())
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=3)  # shutdown takes seconds (issue 12)
