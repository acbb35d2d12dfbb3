"""Progressive recovery per error group: choose, run under a learned timeout, verify, record,
learn, and escalate through the five levels. One recovery per group at a time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coordinator_plugins.error_handling.config import ErrorHandlingConfig
from coordinator_plugins.error_handling.learning.learn import Learner
from coordinator_plugins.error_handling.learning.performance import (
    PerformanceTracker,
)
from coordinator_plugins.error_handling.learning.policy import Decision, SelectionPolicy
from coordinator_plugins.error_handling.learning.timeouts import AdaptiveTimeouts
from coordinator_plugins.error_handling.model import ErrorReport, ResolutionStatus, utcnow
from coordinator_plugins.error_handling.observe.sampler import ResourceSampler
from coordinator_plugins.error_handling.recovery.budget import RecoveryBudget
from coordinator_plugins.error_handling.storage.schema import dumps
from coordinator_plugins.error_handling.strategies.base import LEVEL_STRATEGIES, RecoveryStrategy, StrategyResult

logger = logging.getLogger(__name__)
HISTORY_LIMIT = 50
Targets = tuple[list[str], list[str], Any]  # (workers, tasks, latest metadata) a recovery acts on


@dataclass
class LevelState:
    level: int = 1
    last_updated: float = field(default_factory=time.time)
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY_LIMIT))
    recoveries: int = 0
    failures: int = 0  # consecutive failed recoveries
    cooldown_until: float = 0.0  # monotonic time before which no automatic recovery starts


class RecoveryManager:
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
        persist: Callable[[str, Any, tuple[Any, ...]], Any],
    ) -> None:
        self.config = config
        self.coordinator = coordinator
        self.perf = perf
        self.policy = policy
        self.timeouts = timeouts
        self.budget = budget
        self.sampler = sampler
        self.persist_group = persist_group
        self.persist = persist
        self.strategies: dict[str, RecoveryStrategy] = {}
        self.levels: dict[str, LevelState] = {}
        self.inflight: dict[str, asyncio.Task[tuple[bool, dict[str, Any]]]] = {}
        self.deferred: dict[str, asyncio.TimerHandle] = {}
        self.learner = Learner(coordinator, perf, timeouts, sampler)
        self.decisions = self.learner.decisions
        self.counts = self.learner.counts
        self.recoveries = 0
        self.successes = 0
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.closed = False

    # -- registration -------------------------------------------------------------------------
    def add_strategy(self, strategy_id: str, strategy: RecoveryStrategy) -> None:
        if not isinstance(strategy, RecoveryStrategy):
            raise ValueError(f"strategy {strategy_id!r}: expected a RecoveryStrategy instance")
        if not isinstance(strategy_id, str) or not strategy_id:
            raise ValueError("strategy_id: expected a non-empty string")
        if strategy_id in self.strategies:
            raise ValueError(f"strategy_id: {strategy_id!r} is already registered")
        strategy.strategy_id = strategy_id
        self.strategies[strategy_id] = strategy

    def levels_with_candidates(self) -> list[int]:
        """The progressive levels at which at least one registered strategy may run."""
        return [
            lv for lv, allowed in LEVEL_STRATEGIES.items() if any(s.level in allowed for s in self.strategies.values())
        ]

    # -- levels ----------------------------------------------------------------------------------
    def state(self, error_id: str) -> LevelState:
        st = self.levels.get(error_id)
        if st is None:
            st = self.levels[error_id] = LevelState()
        elif time.time() - st.last_updated > self.config.level_reset_after and error_id not in self.inflight:
            st.level = 1  # a quiet period resets the level
        return st

    def _save_level(self, error_id: str, st: LevelState) -> None:
        st.last_updated = time.time()
        # serialized here: DuckDB would infer a STRUCT from the first entry and fail on the others
        self.persist("level", error_id, (error_id, st.level, utcnow(), dumps(list(st.history))))

    def reset_level(self, error_id: str) -> bool:
        st = self.levels.get(error_id)
        if st is None:
            return False
        st.level = 1
        self._save_level(error_id, st)
        return True

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
        wait = st.cooldown_until - time.monotonic() if st is not None else 0.0
        if wait > 0:
            self._defer(report, wait)
            return "scheduled"
        self._start(report)
        return "scheduled"

    def _start(self, report: ErrorReport) -> asyncio.Task[tuple[bool, dict[str, Any]]]:
        handle = self.deferred.pop(report.error_id, None)
        if handle is not None:
            handle.cancel()
        task = asyncio.create_task(self._recover(report), name=f"recover-{report.error_id[:8]}")
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
        if report.has_targets:  # schedule() respects the budget's deferral and the cooldown
            self.schedule(report)
        elif report.resolution_status is ResolutionStatus.FAILED:
            # Like a supervisor, try again after the cooldown: the fault may not report itself
            # again (a stopped loop, a dead process), and a failed group must not wait forever.
            st = self.levels.get(error_id)
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

    def _info(self, report: ErrorReport, level: int, timeout: float, targets: Targets) -> dict[str, Any]:
        c = report.context
        exc = report.exception
        workers, tasks, metadata = targets
        info: dict[str, Any] = {
            "error_id": report.error_id,
            "error_type": report.error_type.value,
            "category": report.category.value,
            "severity": report.error_severity.value,
            "message": report.message,
            "component": c.component,
            "operation": c.operation,
            "hardware_id": c.hardware_id,
            # every worker and task that the group's occurrences named since its last recovery
            "worker_ids": list(workers),
            "task_ids": list(tasks),
            "worker_id": workers[-1] if workers else None,
            "task_id": tasks[-1] if tasks else None,
            "metadata": dict(metadata if metadata is not None else c.metadata),
            "level": level,
            "timeout": timeout,
            "exception": exc,
            "aggregated_count": report.aggregated_count,
        }
        op = report.recovery_details.get("_operation")
        if op:
            info.update(callable=op[0], args=op[1], kwargs=op[2])
        return info

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
        }
        level = st.level
        first: Decision | None = None  # a first decision the policy made with the start level
        if st.recoveries == 0 and level == 1:
            start = self.policy.start(key, list(self.strategies.values()), cfg.max_recovery_level)
            level, first = max(1, min(start.level, cfg.max_recovery_level)), start.decision
            info["start_reason"] = start.reason
            if level > 1:
                info["skipped_levels"] = list(range(1, level))
        st.recoveries += 1
        targets = report.take_targets()
        self.recoveries += 1
        report.retrying()
        self.persist_group(report)
        backoff = cfg.escalation_backoff
        tried: set[str] = set()
        success = False
        try:
            while level <= cfg.max_recovery_level:
                result = await self._run_level(report, level, key, record_keys, tried, info, targets, first)
                first = None
                if result is None:  # no applicable strategy: passed over
                    level += 1
                    continue
                info["recovery_level"] = level
                if result.outcome == "budget_exhausted":
                    break
                self.policy.record_level(key, level, result.success)
                if result.success:
                    success = True
                    info.update(
                        success=True,
                        strategy_id=result.strategy_id,
                        strategy_name=self.strategies[result.strategy_id].name,
                    )
                    break
                st.level = level  # the highest level reached; the next recovery starts here
                self._save_level(report.error_id, st)
                if level >= cfg.max_recovery_level:
                    break
                if backoff > 0:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, cfg.escalation_backoff_max)
                level += 1
        finally:
            info["execution_time"] = time.perf_counter() - started
            st.history.append(
                {k: v for k, v in info.items() if k != "attempts"}
                | {
                    "attempts": [{k: v for k, v in a.items() if k != "decision"} for a in info["attempts"]],
                    "at": utcnow().isoformat(),
                }
            )
            budget_refused = bool(info["attempts"]) and info["attempts"][-1]["outcome"] == "budget_exhausted"
            if success:
                st.failures = 0
                st.cooldown_until = 0.0
            elif any(a["outcome"] not in ("not_applicable", "budget_exhausted") for a in info["attempts"]):
                st.failures += 1
                if not budget_refused:  # the budget defers by itself
                    pause = min(cfg.escalation_backoff * 2**st.failures, cfg.escalation_backoff_max)
                    st.cooldown_until = time.monotonic() + pause
            if success:
                self.successes += 1
                st.level = 1
                report.resolve(info["strategy_id"])
            else:
                ran = any(a["outcome"] != "not_applicable" for a in info["attempts"])
                if ran:
                    report.fail()
                else:
                    report.reopen(regression=False)
                report.recovery_level = st.level
            report.recovery_details = {k: v for k, v in report.recovery_details.items() if k.startswith("_")} | {
                "last_recovery": {k: info[k] for k in ("success", "strategy_id", "recovery_level", "execution_time")}
            }
            self.persist_group(report)
            self._save_level(report.error_id, st)
            for listener in self.listeners:
                listener(info)
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
        first: Decision | None = None,
    ) -> StrategyResult | None:
        allowed = LEVEL_STRATEGIES[level]
        candidates = [s for s in self.strategies.values() if s.level in allowed]
        while candidates:
            if first is not None and any(s.strategy_id == first.strategy_id for s in candidates):
                decision = first
            else:
                decision = self.policy.choose(candidates, key, level, tried)
            first = None
            strategy = self.strategies[decision.strategy_id]
            if level >= 3 and not self.budget.try_acquire(report.context.component):
                wait = self.budget.retry_after(report.context.component)
                self.learner.attempt(info, decision, "budget_exhausted", 0.0, {"retry_after": round(wait, 3)})
                self._defer(report, wait)
                return StrategyResult(strategy.strategy_id, "budget_exhausted")
            timeout = self.timeouts.get(report.error_type.value, strategy.strategy_id)
            before = self.sampler.latest()
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(timeout):
                    result = await strategy.run(self._info(report, level, timeout, targets))
            except TimeoutError:
                result = StrategyResult(strategy.strategy_id, "timeout", time.perf_counter() - t0)
            tried.add(strategy.strategy_id)
            if result.outcome == "not_applicable":
                if level >= 3:
                    self.budget.refund(report.context.component)  # nothing was done
                self.learner.attempt(info, decision, "not_applicable", result.execution_time, {})
                candidates = [s for s in candidates if s is not strategy]
                continue
            await self.learner.learn(report, level, record_keys, strategy, result, before, decision, info)
            return result
        return None

    def _defer(self, report: ErrorReport, wait: float) -> None:
        """Run this group's recovery again once the budget allows; never drop it."""
        if report.error_id in self.deferred or self.closed:
            return
        loop = asyncio.get_running_loop()

        def again() -> None:
            self.deferred.pop(report.error_id, None)
            if not self.closed and report.is_open and report.error_id not in self.inflight:
                self._start(report)
            elif report.is_open and report.error_id in self.inflight:
                self._defer(report, 0.5)

        self.deferred[report.error_id] = loop.call_later(max(0.05, wait + 0.01), again)

    async def close(self) -> None:
        """Cancel deferred and running recoveries; strategies restore what they changed."""
        self.closed = True
        for handle in self.deferred.values():
            handle.cancel()
        self.deferred.clear()
        tasks = list(self.inflight.values())
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
