"""Progressive recovery per error group: choose, run under a learned timeout, verify, record,
learn, and escalate through the five levels. One recovery per group at a time.

Recovery that holds (SPEC section 9): a success is learned only once it held for
``verify_window`` (:mod:`.verify`); a task that fails the same way on several workers is failed
for good (:mod:`.poison`); a group whose recoveries keep not holding is stopped after
``max_recoveries_per_group`` of them per ``budget_window``, as an Erlang supervisor stops past
its restart intensity, until it is resolved or reset. A recovery in which no strategy can act
costs next to nothing: no task, no level walk, no write.

This module decides when recoveries run (scheduling, deferral, the fleet's lease) and keeps the
groups' level states; :mod:`.ladder` runs one recovery and :mod:`.outcome` ends it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from coordinator_plugins.error_handling.config import BUILTIN_STRATEGY_IDS, ErrorHandlingConfig
from coordinator_plugins.error_handling.learning.learn import Learner, Readings
from coordinator_plugins.error_handling.learning.performance import PerformanceTracker
from coordinator_plugins.error_handling.learning.policy import SelectionPolicy
from coordinator_plugins.error_handling.learning.timeouts import AdaptiveTimeouts
from coordinator_plugins.error_handling.model import ErrorReport, ResolutionStatus, utcnow
from coordinator_plugins.error_handling.recovery.budget import RecoveryBudget
from coordinator_plugins.error_handling.recovery.candidates import Candidates
from coordinator_plugins.error_handling.recovery.ladder import Ladder
from coordinator_plugins.error_handling.recovery.outcome import Listener, RecoveryOutcomes, Settled
from coordinator_plugins.error_handling.recovery.state import LevelMap, LevelState
from coordinator_plugins.error_handling.recovery.verify import Probation
from coordinator_plugins.error_handling.storage.records import LevelRecord
from coordinator_plugins.error_handling.strategies.base import RecoveryStrategy

logger = logging.getLogger(__name__)
MAX_DEFERRED = 1000  # groups whose recovery waits for the budget or a cooldown at once
RETRY_UNREACHABLE = 1.0  # seconds before asking for a fleet lease again when the database cannot answer


class Lease(Protocol):
    """A fleet's recovery leases (``fleet.lease.LeaseKeeper``, SPEC 10): one recovery per group
    in the whole fleet. Used while it runs (between the fleet's start and stop)."""

    @property
    def running(self) -> bool: ...
    async def acquire(self, error_id: str) -> tuple[bool, str, float]: ...
    async def release(self, error_id: str) -> None: ...


class RecoveryManager:
    def __init__(
        self,
        config: ErrorHandlingConfig,
        coordinator: Any,
        perf: PerformanceTracker,
        policy: SelectionPolicy,
        timeouts: AdaptiveTimeouts,
        budget: RecoveryBudget,
        sampler: Readings,
        persist_group: Callable[[ErrorReport], Any],
        save_level: Callable[[LevelRecord], Any],
        lease: Lease | None = None,
        listeners: Iterable[Listener] = (),
    ) -> None:
        self.config = config
        self.coordinator = coordinator
        self.perf = perf
        self._policy = policy
        self.timeouts = timeouts
        self.budget = budget
        self.sampler = sampler
        self.persist_group = persist_group
        self.save_level = save_level
        self.lease = lease
        self.candidates = Candidates()
        self.strategies: dict[str, RecoveryStrategy] = self.candidates.strategies
        self.levels: LevelMap = LevelMap()
        self.inflight: dict[str, asyncio.Task[tuple[bool, dict[str, Any]]]] = {}
        self.deferred: dict[str, asyncio.TimerHandle] = {}
        self.learner = Learner(coordinator, perf, timeouts, sampler, config.verify_window)
        self.decisions = self.learner.decisions
        self.counts = self.learner.counts
        self.outcomes = RecoveryOutcomes(config, self.learner, policy, self.levels, persist_group, self._save_level,
                                         self._cancel_deferred, listeners)
        self.ladder = Ladder(config, coordinator, self.candidates, perf, policy, timeouts, budget, sampler,
                             self.learner, self.outcomes, persist_group, self.state, self._save_level, self._defer)
        self.probation: Probation = self.outcomes.probation
        self.listeners: list[Listener] = self.outcomes.listeners  # told of each recovery that ended
        # (time, error type) of recent reports that no registered strategy could act on
        self.unactionable: deque[tuple[float, str]] = deque(maxlen=1000)
        self.shed = 0  # recoveries not deferred because MAX_DEFERRED groups already wait
        self.forgotten_levels = 0  # level states dropped from memory (kept in the database)
        self.closed = False

    @property
    def policy(self) -> SelectionPolicy:
        """How strategies are chosen. Assigning another (the selection benchmarks put an oracle
        here once the strategies are registered) replaces it wherever recovery uses it."""
        return self._policy

    @policy.setter
    def policy(self, policy: SelectionPolicy) -> None:
        self._policy = self.ladder.policy = self.outcomes.policy = policy

    # -- what the parts count -----------------------------------------------------------------
    @property
    def recoveries(self) -> int:
        return self.ladder.recoveries

    @property
    def successes(self) -> int:
        """Successes that held (at once when verify_window is 0)."""
        return self.outcomes.successes

    @property
    def poisoned(self) -> int:
        """Tasks failed for good."""
        return self.ladder.poisoned

    # -- registration -------------------------------------------------------------------------
    def add_strategy(self, strategy_id: str, strategy: RecoveryStrategy) -> None:
        self.candidates.add(strategy_id, strategy)

    def add_custom_strategy(self, strategy_id: str, strategy: RecoveryStrategy) -> None:
        """Register a custom strategy, as the seed design shows; a built-in id is refused."""
        if strategy_id in BUILTIN_STRATEGY_IDS:
            raise ValueError(f"strategy_id: {strategy_id!r} is a built-in strategy id")
        self.add_strategy(strategy_id, strategy)

    def add_listener(self, listener: Listener) -> None:
        """Tell ``listener`` of each recovery that ends (with its recovery_info)."""
        self.listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop telling ``listener``; ValueError when it was not added."""
        self.listeners.remove(listener)

    def add_verification_listener(self, listener: Settled) -> None:
        """Tell ``listener(entry, held)`` when a provisional success's verify window ends."""
        self.outcomes.settled.append(listener)

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
        provisional success of its group makes that success a failure (see :meth:`.RecoveryOutcomes.verified`)."""
        if self.probation.pending:
            self.probation.observe(report.error_id, worker_id, task_id)

    def _start(self, report: ErrorReport) -> asyncio.Task[tuple[bool, dict[str, Any]]]:
        self._cancel_deferred(report.error_id)
        lease = self.lease
        work = self.ladder.run(report) if lease is None or not lease.running else self._recover_leased(lease, report)
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

    async def recover(self, report: ErrorReport, wait: float = 0.0) -> tuple[bool, dict[str, Any]]:
        """Recover now, or join the recovery already running for this group. With ``wait`` > 0,
        return after at most that many seconds: the recovery goes on, and the answer says so
        (``in_progress``) and where to follow it."""
        task = self.inflight.get(report.error_id) or self._start(report)
        if wait <= 0:
            return await asyncio.shield(task)
        done, _ = await asyncio.wait({task}, timeout=wait)
        if task in done:
            return task.result()
        follow = f"{self.config.api_prefix.rstrip('/')}/errors/{report.error_id}"
        return False, {
            "error_id": report.error_id, "success": False, "in_progress": True, "strategy_id": None,
            "strategy_name": None, "recovery_level": report.recovery_level, "execution_time": wait, "attempts": [],
            "follow": follow,
            "reason": (f"recovery still running after handle_error_wait = {wait:g} s; it goes on: follow it at "
                       f"GET {follow} (resolution_status, recovery_history)"),
        }

    # -- restored from the store ------------------------------------------------------------------
    def restore(self, levels: Iterable[LevelRecord], stopped: Iterable[tuple[str, str]],
                groups: Iterable[ErrorReport]) -> None:
        """At startup: the stored level states, and the groups whose recovery was stopped (a
        stopped recovery stays stopped), whether their group is in memory or only in the store."""
        for lv in levels:
            self._restore_level(lv)
        for report in groups:
            self._keep_stopped(report)
        for error_id, reason in stopped:
            self.state(error_id).stopped = reason

    def loaded(self, report: ErrorReport, level: LevelRecord | None) -> None:
        """A group came back from the store (evicted, or not loaded at startup): its level too."""
        if level is not None and report.error_id not in self.levels:
            self._restore_level(level)
        self._keep_stopped(report)

    def _restore_level(self, lv: LevelRecord) -> None:
        st = LevelState(level=int(lv.level), last_updated=lv.updated_at.timestamp())
        st.recoveries = 1
        for h in lv.history:
            st.history.append(dict(h))
        old = self.levels.get(lv.error_id)
        if old is not None:
            st.stopped = old.stopped
        self.levels[lv.error_id] = st

    def _keep_stopped(self, report: ErrorReport) -> None:
        stopped = report.recovery_details.get("stopped")
        if stopped and report.is_open:
            self.state(report.error_id).stopped = str(stopped)

    async def _recover_leased(self, lease: Lease, report: ErrorReport) -> tuple[bool, dict[str, Any]]:
        """A group's recovery under its fleet lease (SPEC section 10): taken before the first
        strategy runs, renewed while it lasts, released at the end. A group whose lease another
        member holds is recovered there; here it waits until that lease would expire, so a member
        that dies mid-recovery is taken over without anyone having to notice."""
        info: dict[str, Any] = {"error_id": report.error_id, "success": False, "strategy_id": None,
                                "strategy_name": None, "recovery_level": 0, "execution_time": 0.0, "attempts": []}
        try:
            ok, owner, left = await lease.acquire(report.error_id)
        except Exception as exc:
            if report.category.value.startswith("db_") or report.context.component == "store":
                # This member's own database link: its recovery acts on nothing another member
                # owns, and it cannot wait for a lease in the database it has lost.
                logger.warning("fleet: no lease for %s (%s); recovering this member's own database link",
                               report.error_id, exc)
                return await self.ladder.run(report)
            info["reason"] = f"fleet lease unavailable: {type(exc).__name__}: {exc}"
            self._defer(report, RETRY_UNREACHABLE)
            return False, info
        if not ok:
            info.update(reason=f"recovery runs on fleet member {owner}", leased_by=owner)
            self._defer(report, left + 0.25)
            return False, info
        try:
            return await self.ladder.run(report)
        finally:
            await lease.release(report.error_id)

    def _cancel_deferred(self, error_id: str) -> None:
        handle = self.deferred.pop(error_id, None)
        if handle is not None:
            handle.cancel()

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
