"""How a recovery ends: the group's status and level, the cooldown, probation for a success
(SPEC section 9: learned once it held, a failure when it recurred, and the group continues at
the next level), and the count of recoveries that did not hold: past
``max_recoveries_per_group`` of them within ``budget_window`` the group is stopped, as an Erlang
supervisor stops past its restart intensity or a queue dead-letters a message, until it is
resolved or reset. The recovery manager holds one :class:`RecoveryOutcomes`; its listeners are
told of every recovery that ended (``recovery_outcome`` names how, for an operator)."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from coordinator_plugins.error_handling.config import ErrorHandlingConfig
from coordinator_plugins.error_handling.learning.learn import HeldRun, Learner
from coordinator_plugins.error_handling.learning.policy import SelectionPolicy
from coordinator_plugins.error_handling.model import ErrorReport, utcnow
from coordinator_plugins.error_handling.recovery.state import LevelMap, LevelState, Targets
from coordinator_plugins.error_handling.recovery.verify import Probation, Provisional
from coordinator_plugins.error_handling.strategies.base import StrategyResult

logger = logging.getLogger(__name__)
Listener = Callable[[dict[str, Any]], None]  # told of each recovery that ended, with its recovery_info
# told when a provisional success ends: its recovery's history entry, and whether it held
Settled = Callable[[dict[str, Any], bool], None]
RECOVERY_OUTCOMES = ("succeeded", "failed", "nothing_applicable", "budget_deferred")


def recovery_outcome(info: dict[str, Any]) -> str:
    """How one finished recovery ended, for an operator (one of RECOVERY_OUTCOMES): it succeeded,
    it ran and failed, no strategy could act on the error, or the budget deferred it."""
    if info.get("success"):
        # a success that recurred within its verify window did not hold (SPEC 9)
        return "failed" if info.get("verification") == "recurred" else "succeeded"
    attempts = info.get("attempts") or []
    if attempts and attempts[-1].get("outcome") == "budget_exhausted":
        return "budget_deferred"
    if all(a.get("outcome") == "not_applicable" for a in attempts):
        return "nothing_applicable"
    return "failed"


class RecoveryOutcomes:
    """Ends the recoveries of the manager that holds it: ``levels`` are the manager's level
    states, ``save_level`` writes one, ``cancel_deferred`` drops a group's deferred recovery."""

    def __init__(
        self,
        config: ErrorHandlingConfig,
        learner: Learner,
        policy: SelectionPolicy,
        levels: LevelMap,
        persist_group: Callable[[ErrorReport], Any],
        save_level: Callable[[str, LevelState], None],
        cancel_deferred: Callable[[str], None],
        listeners: Iterable[Listener] = (),
    ) -> None:
        self.config = config
        self.learner = learner
        self.policy = policy
        self.levels = levels
        self.persist_group = persist_group
        self.save_level = save_level
        self.cancel_deferred = cancel_deferred
        self.listeners: list[Listener] = list(listeners)
        self.settled: list[Settled] = []
        self.listener_failures = 0  # calls of listeners that raised (logged once per listener)
        self._failed_ids: set[int] = set()  # listeners whose failure was logged (they stay registered)
        self._pending: set[asyncio.Future[Any]] = set()  # async listeners still running
        self.probation = Probation(config.verify_window, self.verified)
        self.successes = 0  # successes that held (at once when verify_window is 0)

    def stop(self, report: ErrorReport, st: LevelState, count: int, target: str) -> None:
        """Stop recovering the group (a dead letter) and say so once, loudly."""
        cfg = self.config
        st.stopped = (f"recovery does not hold: {count} recoveries of {target} within {cfg.budget_window:g} s "
                      "did not fix it for good; resolve or reset the group to recover it again")
        st.cooldown_until = 0.0
        self.cancel_deferred(report.error_id)
        report.fail()
        report.recovery_details["stopped"] = st.stopped
        report.recovery_details["failure_reason"] = st.stopped
        logger.error("error group %s (%s): %s", report.error_id, report.message[:80], st.stopped)

    def over_intensity(self, report: ErrorReport, st: LevelState, targets: Targets) -> bool:
        """Before a recovery: stop the group when a target it would act on already had
        ``max_recoveries_per_group`` recoveries within ``budget_window``, held or not (SPEC 9)."""
        limit = self.config.max_recoveries_per_group
        if not limit or st.stopped is not None:
            return st.stopped is not None
        for target in targets.counted:
            count = st.within([target], self.config.budget_window)
            if count >= limit:
                self.stop(report, st, count, target)
                self.persist_group(report)
                self.save_level(report.error_id, st)
                return True
        return False

    def unheld(self, report: ErrorReport, st: LevelState, targets: tuple[str, ...]) -> None:
        """A recovery of these targets did not hold (it failed, or its success recurred): past
        ``max_recoveries_per_group`` recoveries of one of them within ``budget_window`` (each one
        counted when it ran, held or not), stop recovering the group."""
        limit = self.config.max_recoveries_per_group
        if not limit or st.stopped is not None:
            return
        for target in targets:
            count = st.within([target], self.config.budget_window)
            if count >= limit:
                self.stop(report, st, count, target)
                return

    def nothing_left(self, report: ErrorReport, st: LevelState, info: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """Every target task is final: no strategy runs; a poison task leaves its group failed."""
        verdicts = info.get("poison_tasks")
        if verdicts:
            report.fail()
            report.recovery_details["failure_reason"] = "poison task: " + "; ".join(verdicts)
            report.recovery_level = st.level
            self.persist_group(report)
        info["reason"] = report.recovery_details.get("failure_reason") or "every task it named has ended"
        return False, info

    def ended(
        self,
        report: ErrorReport,
        st: LevelState,
        info: dict[str, Any],
        success: bool,
        poisoned: bool,
        started: float,
        key: str,
        held: tuple[HeldRun, int, StrategyResult, int | None] | None,
        targets: Targets,
    ) -> None:
        """Close a recovery in which at least one strategy was tried: history, status, level,
        cooldown, the count of recoveries that did not hold, and probation for a success."""
        cfg = self.config
        info["execution_time"] = time.perf_counter() - started
        if all(a["outcome"] == "budget_exhausted" for a in info["attempts"]):
            # Postponed before any strategy ran (the budget defers it): not a recovery, so no
            # history entry and no write. Recording each postponement made a flood of groups
            # waiting for the budget rewrite ever longer level histories (issue 12, finding 2).
            self.tell(info)
            return
        ran = any(a["outcome"] not in ("not_applicable", "budget_exhausted") for a in info["attempts"])
        entry = {k: v for k, v in info.items() if k != "attempts"} | {
            # each run with why it was chosen (its policy, reason and probability), not every score
            "attempts": [
                {k: v for k, v in a.items() if k != "decision"}
                | {k: a["decision"][k] for k in ("policy", "reason", "probability") if k in a.get("decision", {})}
                for a in info["attempts"]
            ],
            "at": utcnow().isoformat(),
        }
        st.history.append(entry)
        budget_refused = info["attempts"][-1]["outcome"] == "budget_exhausted"
        if ran:  # restart intensity: every recovery that acted counts against its targets
            st.count_recovery(list(targets.counted), cfg.budget_window)
        if success:
            if held is None:  # a success on probation is not one yet: consecutive failures stand
                st.failures = 0
            st.cooldown_until = 0.0
            st.rewind = False
            self.successes += held is None
            st.level = 1
            report.resolve(info["strategy_id"])
            report.recovery_details.pop("failure_reason", None)
            if held is not None:
                run, level, result, next_level = held
                served = [str(v) for v in (result.details.get("serving_workers") or {}).values() if v]
                entry["verification"] = info["verification"] = "pending"
                self.probation.hold(Provisional(
                    report.error_id, level, key, run, frozenset(targets.workers + served),
                    frozenset(targets.tasks), entry, report, counted=targets.counted, next_level=next_level))
        elif poisoned:
            st.cooldown_until = 0.0  # the task's problem: no supervisor-style retry either
            report.fail()
            report.recovery_details["failure_reason"] = "poison task: " + "; ".join(info["poison_tasks"])
            info["reason"] = report.recovery_details["failure_reason"]
        elif ran:
            st.failures += 1
            if not budget_refused:  # the budget defers by itself
                st.cooldown_until = time.monotonic() + self.pause(st.failures)
                st.rewind = True  # the walk ran out: the next one starts again from the lowest level
            report.fail()
            self.unheld(report, st, targets.counted)
        else:
            report.reopen(regression=False)
        if not success:
            report.recovery_level = st.level
        if st.stopped:
            info["reason"] = st.stopped
        report.recovery_details = {k: v for k, v in report.recovery_details.items() if k.startswith("_")} | {
            k: v for k, v in report.recovery_details.items() if k in ("failure_reason", "stopped")
        } | {
            "last_recovery": {k: info[k] for k in ("success", "strategy_id", "recovery_level", "execution_time")}
        }
        self.persist_group(report)
        self.save_level(report.error_id, st)
        self.tell(info)

    def pause(self, failures: int) -> float:
        """The cooldown after ``failures`` consecutive failed recoveries: ``escalation_backoff``
        doubling per failure, capped at ``escalation_backoff_max``."""
        cfg = self.config
        return float(min(cfg.escalation_backoff * 2**failures, cfg.escalation_backoff_max))

    def tell(self, info: dict[str, Any]) -> None:
        """Call each listener with ``info``. What a listener raises is logged (with its traceback
        the first time for that listener, then counted) and never reaches the recovery or the
        caller of ``handle_error``; an ``async def`` listener's coroutine runs as a task."""
        for listener in list(self.listeners):
            self._call(listener, info)

    def _call(self, listener: Callable[..., Any], *args: Any) -> None:
        try:
            result = listener(*args)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._pending.add(task)
                task.add_done_callback(functools.partial(self._done, listener=listener))
        except Exception as exc:  # a listener's bug must not end the recovery (no silent failure: logged)
            self._failed(listener, exc)

    def _done(self, task: asyncio.Future[Any], *, listener: Callable[..., Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._failed(listener, task.exception())

    def _failed(self, listener: Callable[..., Any], exc: BaseException | None) -> None:
        self.listener_failures += 1
        name = getattr(listener, "__qualname__", repr(listener))
        if id(listener) not in self._failed_ids:  # by identity: two lambdas share a name
            self._failed_ids.add(id(listener))
            logger.error("recovery listener %s raised; the recovery went on without it (fix the listener: it "
                         "must not raise; later failures of it are only counted in listener_failures)",
                         name, exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None)

    def verified(self, p: Provisional, held: bool) -> None:
        """A provisional success ended: learn it now, as a success when it held; when the error
        recurred, as a failure, and the group's recovery continues at the next level."""
        self.learner.settle(p.run, held)
        self.policy.record_level(p.key, p.level, held)
        p.entry["verification"] = verdict = "held" if held else "recurred"
        for attempt in p.entry.get("attempts") or ():  # the run that was pending is settled too
            if isinstance(attempt, dict) and attempt.get("verification") == "pending":
                attempt["verification"] = verdict
        if not held:  # the history tells the truth: a success that did not hold is not one
            p.entry["success"] = False
            if p.report is not None:
                last = p.report.recovery_details.get("last_recovery")
                if isinstance(last, dict):
                    last["success"] = False
        for listener in list(self.settled):
            self._call(listener, p.entry, held)
        st = self.levels.get(p.error_id)
        report: ErrorReport | None = None
        if held:
            self.successes += 1
            if st is not None:
                st.failures = 0
        elif st is not None:
            # the next level with an applicable strategy (never one where nothing can run); at the
            # top, the ladder again from the lowest such level. Either way after the group's
            # cooldown, as for any failed recovery: a recurrence is not an escalation at once.
            st.level, st.rewind = (p.next_level, False) if p.next_level is not None else (p.level, True)
            st.failures += 1
            st.cooldown_until = time.monotonic() + self.pause(st.failures)
            report = p.report
            if report is not None:
                self.unheld(report, st, p.counted)
                report.recovery_level = st.level
                self.persist_group(report)
        if st is not None:
            self.save_level(p.error_id, st)
