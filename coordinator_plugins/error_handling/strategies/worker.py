"""The built-in ``worker`` strategy (MEDIUM): the workers at fault drained, restarted and serving again."""

from __future__ import annotations

import asyncio
from typing import Any

from coordinator_plugins.contract.protocol import CoordinatorProtocol
from coordinator_plugins.error_handling.strategies.base import TASK_CATEGORIES, NotApplicable, RecoveryLevel
from coordinator_plugins.error_handling.strategies.builtin import (
    WORKER_CATEGORIES,
    BuiltinStrategy,
    deadline_of,
    has_methods,
    open_tasks,
    remaining,
    rerun,
    targets_of,
)

LOSS_CATEGORIES = frozenset({"worker_offline", "worker_crash"})


class WorkerRecoveryStrategy(BuiltinStrategy):
    """MEDIUM: for each worker at fault: drain it, requeue its tasks, restart (or replace) its
    process, and succeed only when it (or its replacement) heartbeats and asks for work again,
    its tasks are pending or running elsewhere, and, for a failed task, the task now completes.

    A worker whose ``worker_info`` says ``restartable: False`` (the reference coordinator's for
    a worker it did not launch) is not acted on; with no other worker it is not applicable.

    For a task's failure the worker is at fault only while the task failed on that worker alone:
    an error that follows the task across workers is the task's problem, not a worker's."""

    strategy_id = "worker"
    categories = WORKER_CATEGORIES | TASK_CATEGORIES | {"connection"}
    applicable_reads = frozenset({"worker_ids", "worker_id"})
    applicable_pure = True  # the coordinator's methods are looked up, never called

    def __init__(self, coordinator: CoordinatorProtocol | None) -> None:
        super().__init__(coordinator, "Worker recovery", RecoveryLevel.MEDIUM)

    def is_applicable(self, error_info: dict[str, Any]) -> bool:
        return bool(targets_of(error_info, "worker_ids", "worker_id")) and has_methods(
            self.coordinator, "worker_info", "drain_worker", "requeue_worker_tasks", "restart_worker",
            "wait_worker_serving")

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        c = self._c()
        known = {w: info for w in targets_of(error_info, "worker_ids", "worker_id")
                 if (info := await c.worker_info(w)) is not None}
        workers = list(known)
        tasks: list[str] = []
        if error_info.get("category") in TASK_CATEGORIES:
            tasks = await open_tasks(c, targets_of(error_info, "task_ids", "task_id"))
            if tasks or error_info.get("task_ids"):
                workers = self._at_fault(workers, tasks, error_info)
        # A worker the coordinator may neither restart nor replace (one it did not launch) is not
        # acted on: nothing would bring it back, and acting on it would be acting on nothing.
        if error_info.get("category") in LOSS_CATEGORIES:
            # A worker reported lost that heartbeats, and whose process runs where the coordinator
            # can see it, is not lost: restarting it would be acting on nothing broken (SPEC 9).
            serving = [w for w in workers
                       if known[w].get("process_running") is not False and await c.worker_alive(w)]
            if serving:
                error_info["details"]["not_lost"] = serving
                workers = [w for w in workers if w not in serving]
                if not workers:
                    raise NotApplicable(f"worker(s) {', '.join(serving)} heartbeat and run: nothing lost to recover")
        held = {w: str(known[w].get("why_not_restartable") or f"worker {w} is not restartable")
                for w in workers if known[w].get("restartable") is False}
        workers = [w for w in workers if w not in held]
        if held:
            error_info["details"]["not_restartable"] = held
        if not workers:
            raise NotApplicable("; ".join(held.values()) if held else "no known worker to recover")
        deadline = deadline_of(error_info)
        earlier = [str(t) for t in (error_info.get("metadata") or {}).get("requeued") or []]
        results = await asyncio.gather(*(self._recover_one(w, error_info, deadline) for w in workers))
        for tid in earlier:  # tasks the coordinator requeued when it noticed the loss
            if tid not in error_info["affected_tasks"]:
                error_info["affected_tasks"].append(tid)
                t = await c.task_info(tid)
                if t and t.get("status") in ("pending", "assigned", "running", "completed"):
                    error_info["recovered_tasks"].append(tid)
        error_info["details"]["serving_workers"] = dict(zip(workers, results, strict=True))
        if not all(r is not None for r in results):
            return False
        return await rerun(c, tasks, error_info, deadline) if tasks else True

    @staticmethod
    def _at_fault(workers: list[str], tasks: list[str], error_info: dict[str, Any]) -> list[str]:
        failures: dict[str, list[Any]] = error_info.get("task_failures") or {}
        suspects: set[str] = set()
        followed = []
        for tid in tasks:
            on = {str(w) for w in failures.get(tid) or [] if w}
            if len(on) == 1:
                suspects |= on
            elif len(on) > 1:
                followed.append(f"{tid} on {', '.join(sorted(on))}")
        at_fault = [w for w in workers if w in suspects]
        if not at_fault:
            why = (f"the error follows the task across workers ({'; '.join(followed)}): the task's problem"
                   if followed else "no worker the failed tasks point at")
            raise NotApplicable(why)
        return at_fault

    async def _recover_one(self, wid: str, error_info: dict[str, Any], deadline: float) -> str | None:
        c = self._c()
        drained = await c.drain_worker(wid)
        try:
            moved = await c.requeue_worker_tasks(wid)
            error_info["affected_tasks"].extend(moved)
            serving = await c.restart_worker(wid, timeout=remaining(deadline))
            if serving is None or not await c.worker_alive(serving):
                return None
            if serving == wid:
                await c.undrain_worker(wid)
                drained = False
            # Heartbeating is not serving: it must ask for work again.
            if not await c.wait_worker_serving(serving, remaining(deadline)):
                error_info["details"].setdefault("not_serving", []).append(serving)
                return None
            ok = True
            for tid in moved:
                t = await c.task_info(tid) or {}
                status = t.get("status")
                elsewhere = t.get("worker_id") != wid or serving == wid
                if status in ("pending", "completed") or (status in ("assigned", "running") and elsewhere):
                    error_info["recovered_tasks"].append(tid)
                else:
                    ok = False
            return serving if ok else None
        finally:
            if drained:  # restore the scheduling flag we changed, also on timeout or cancellation
                await c.undrain_worker(wid)
