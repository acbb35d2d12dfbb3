"""The five built-in strategies. Each acts through the coordinator contract
(:class:`~coordinator_plugins.contract.CoordinatorProtocol`), declares the error categories it can
act on, and succeeds only once it verified that the symptom that started the recovery is gone."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any

from coordinator_plugins.contract.protocol import CoordinatorProtocol
from coordinator_plugins.error_handling.model import ErrorCategory
from coordinator_plugins.error_handling.storage.base import Store
from coordinator_plugins.error_handling.strategies.base import (
    TASK_CATEGORIES,
    NotApplicable,
    RecoveryLevel,
    RecoveryStrategy,
)

logger = logging.getLogger(__name__)

WORKER_CATEGORIES = frozenset({"worker_offline", "worker_crash", "worker_hang", "worker_resource"})
# A failing test is a result; invalid input, configuration, credentials and missing modules fail
# the same way on every run: no infrastructure recovery acts on them.
DETERMINISTIC_CATEGORIES = frozenset(
    {"test_failure", "validation", "configuration", "auth_error", "unauthorized", "dependency"}
)


def _deadline(info: dict[str, Any], default: float = 30.0) -> float:
    return time.monotonic() + float(info.get("timeout") or default)


def _remaining(deadline: float) -> float:
    return max(0.05, deadline - time.monotonic())


def _has(coordinator: Any, *names: str) -> bool:
    return coordinator is not None and all(callable(getattr(coordinator, n, None)) for n in names)


def _targets(error_info: dict[str, Any], many: str, one: str) -> list[str]:
    """Every worker or task the error's occurrences named (``worker_ids``), else the single one."""
    given = error_info.get(many)
    if not given:  # (the common case, asked on every report: no list built)
        return [str(error_info[one])] if error_info.get(one) else []
    ids = [str(x) for x in given if x]
    if not ids and error_info.get(one):
        ids = [str(error_info[one])]
    return list(dict.fromkeys(ids))


class BuiltinStrategy(RecoveryStrategy):
    """A built-in: acts through a coordinator that implements the contract (None: no coordinator)."""

    coordinator: CoordinatorProtocol | None

    def _c(self) -> CoordinatorProtocol:
        if self.coordinator is None:  # is_applicable is False without one
            raise NotApplicable("no coordinator to act through")
        return self.coordinator


async def _open_tasks(c: CoordinatorProtocol, task_ids: list[str]) -> list[str]:
    """The tasks that may run again: known, and neither completed nor failed for good."""
    out = []
    for tid in task_ids:
        t = await c.task_info(tid)
        if t is not None and not t.get("final") and t.get("status") != "completed":
            out.append(tid)
    return out


async def _rerun(c: CoordinatorProtocol, tasks: list[str], error_info: dict[str, Any], deadline: float) -> bool:
    """Run the tasks again and wait for them: True only when every one completed."""
    error_info["affected_tasks"].extend(t for t in tasks if t not in error_info["affected_tasks"])
    queued = []
    for tid in tasks:
        if await c.retry_task(tid):
            queued.append(tid)
        else:  # it ended meanwhile, or is final: a completed one is a recovered one
            t = await c.task_info(tid)
            if not (t and t.get("status") == "completed"):
                return False
            error_info["recovered_tasks"].append(tid)
    statuses = await asyncio.gather(*(c.wait_task(tid, _remaining(deadline)) for tid in queued))
    error_info["details"]["task_status"] = dict(zip(queued, statuses, strict=True))
    error_info["recovered_tasks"].extend(t for t, s in zip(queued, statuses, strict=True) if s == "completed")
    return all(s == "completed" for s in statuses)


class RetryStrategy(BuiltinStrategy):
    """LOW: re-run the failed operation (``callable`` in the context) or re-submit the failed tasks
    (never one that completed or was failed for good), and succeed only when the re-runs did."""

    strategy_id = "retry"
    # Anything a re-run may fix; never what fails the same way every time it runs.
    categories = frozenset(c.value for c in ErrorCategory) - DETERMINISTIC_CATEGORIES
    applicable_reads = frozenset({"callable", "task_ids", "task_id"})
    applicable_pure = True  # the coordinator's methods are looked up, never called

    def __init__(self, coordinator: CoordinatorProtocol | None) -> None:
        super().__init__(coordinator, "Retry", RecoveryLevel.LOW)

    def is_applicable(self, error_info: dict[str, Any]) -> bool:
        if callable(error_info.get("callable")):
            return True
        return bool(_targets(error_info, "task_ids", "task_id")) and _has(
            self.coordinator, "retry_task", "wait_task", "task_info")

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        fn = error_info.get("callable")
        if callable(fn):
            result = fn(*(error_info.get("args") or ()), **(error_info.get("kwargs") or {}))
            if inspect.isawaitable(result):
                result = await result
            error_info["details"]["result"] = repr(result)[:200]
            return True
        c = self._c()
        tasks = await _open_tasks(c, _targets(error_info, "task_ids", "task_id"))
        if not tasks:
            raise NotApplicable("no failed task left to re-run")
        return await _rerun(c, tasks, error_info, _deadline(error_info))


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
        return bool(_targets(error_info, "worker_ids", "worker_id")) and _has(
            self.coordinator, "worker_info", "drain_worker", "requeue_worker_tasks", "restart_worker",
            "wait_worker_serving")

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        c = self._c()
        known = {w: info for w in _targets(error_info, "worker_ids", "worker_id")
                 if (info := await c.worker_info(w)) is not None}
        workers = list(known)
        tasks: list[str] = []
        if error_info.get("category") in TASK_CATEGORIES:
            tasks = await _open_tasks(c, _targets(error_info, "task_ids", "task_id"))
            if tasks or error_info.get("task_ids"):
                workers = self._at_fault(workers, tasks, error_info)
        # A worker the coordinator may neither restart nor replace (one it did not launch) is not
        # acted on: nothing would bring it back, and acting on it would be acting on nothing.
        held = {w: str(known[w].get("why_not_restartable") or f"worker {w} is not restartable")
                for w in workers if known[w].get("restartable") is False}
        workers = [w for w in workers if w not in held]
        if held:
            error_info["details"]["not_restartable"] = held
        if not workers:
            raise NotApplicable("; ".join(held.values()) if held else "no known worker to recover")
        deadline = _deadline(error_info)
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
        return await _rerun(c, tasks, error_info, deadline) if tasks else True

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
            serving = await c.restart_worker(wid, timeout=_remaining(deadline))
            if serving is None or not await c.worker_alive(serving):
                return None
            if serving == wid:
                await c.undrain_worker(wid)
                drained = False
            # Heartbeating is not serving: it must ask for work again.
            if not await c.wait_worker_serving(serving, _remaining(deadline)):
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


class DatabaseRecoveryStrategy(BuiltinStrategy):
    """HIGH: reconnect the coordinator's database and the plugin's store, verify both with a query.
    Never deletes or renames a file."""

    strategy_id = "database"
    categories = frozenset({"db_connection", "db_query", "db_locked"})
    applicable_reads = frozenset({"error_type", "category"})
    applicable_pure = True  # the coordinator's method is looked up, never called

    def __init__(self, coordinator: CoordinatorProtocol | None, store: Store | None = None) -> None:
        super().__init__(coordinator, "Database reconnect", RecoveryLevel.HIGH)
        self.store = store

    def is_applicable(self, error_info: dict[str, Any]) -> bool:
        category = str(error_info.get("category") or "")
        return (error_info.get("error_type") == "database" or category.startswith("db_")) and (
            _has(self.coordinator, "reconnect_database") or self.store is not None
        )

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        component = str(error_info.get("component") or "")
        c = self.coordinator if _has(self.coordinator, "reconnect_database", "health") else None
        targets: list[str] = []
        coord_ok = True
        if c is not None:
            coord_ok = bool((await c.health()).get("database"))
        store_ok = self.store is None or await self.store.ping()
        own = component in ("store", "error_handling")
        if c is not None and (not coord_ok or not own):
            targets.append("coordinator")
        if self.store is not None and (not store_ok or own or (coord_ok and not targets)):
            targets.append("store")
        if not targets:
            raise NotApplicable("no database connection to reconnect")
        ok = True
        if c is not None and "coordinator" in targets:
            ok = bool(await c.reconnect_database()) and ok
            ok = bool((await c.health()).get("database")) and ok
        if "store" in targets and self.store is not None:
            ok = bool(await self.store.reconnect()) and ok
            ok = bool(await self.store.ping()) and ok
        error_info["details"]["reconnected"] = targets
        return ok


class CoordinatorRecoveryStrategy(BuiltinStrategy):
    """CRITICAL: restart the internal component the error names (or every unhealthy one), or reload
    state from the database for state errors; succeed when each restarted loop ticked again.
    Never drops worker connections or requeues unrelated tasks. A coordinator with nothing to
    restart (a seed-shaped one without ``restart_*`` methods) is not applicable, never a success."""

    strategy_id = "coordinator"
    categories = frozenset({"coordinator_error", "coordinator_crash", "scheduler_stalled", "state_error"})
    applicable_reads = frozenset({"error_type", "category"})

    def __init__(self, coordinator: CoordinatorProtocol | None) -> None:
        super().__init__(coordinator, "Coordinator component restart", RecoveryLevel.CRITICAL)

    @staticmethod
    def _state(error_info: dict[str, Any]) -> bool:
        return error_info.get("category") == "state_error" or error_info.get("error_type") == "state"

    def is_applicable(self, error_info: dict[str, Any]) -> bool:
        category = str(error_info.get("category") or "")
        etype = error_info.get("error_type")
        c = self.coordinator
        if not (etype in ("coordination", "scheduling", "state")
                or category.split("_")[0] in ("coordinator", "scheduler", "state")):
            return False
        if not _has(c, "restart_component", "component_healthy", "component_names"):
            return False
        assert c is not None
        return bool(c.component_names()) or (self._state(error_info) and _has(c, "reload_state"))

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        c = self._c()
        names = c.component_names()
        meta = error_info.get("metadata") or {}
        wanted = meta.get("component") or error_info.get("component")
        if wanted in names:
            targets = [wanted]
        else:
            targets = [n for n in names if not await c.component_healthy(n)]
        state = self._state(error_info) and _has(c, "reload_state")
        if not targets and not state:
            raise NotApplicable("no component to restart: " + ("all are healthy" if names else "none is restartable"))
        restarted = []
        for name in targets:
            if await c.restart_component(name):
                restarted.append(name)
        error_info["details"]["restarted"] = restarted
        reloaded = True
        if state:
            reloaded = bool(await c.reload_state())
            error_info["details"]["state_reloaded"] = reloaded
        healthy = [await c.component_healthy(n) for n in targets]
        return all(healthy) and len(restarted) == len(targets) and reloaded


class SystemRecoveryStrategy(BuiltinStrategy):
    """CRITICAL: shed load while the machine is overloaded, and restore every setting it changed,
    in a ``finally``, also on timeout or cancellation.

    Shedding halves the concurrency limit and pauses scheduling for at most ``max_pause``
    seconds, then lets the farm run at the halved limit until the overload is gone for
    ``settle`` seconds (success), or gives up (failure) when it is still there ``patience``
    seconds later, since shedding is not what relieves it, or at the deadline. It never holds the
    farm paused for the whole run: an overload the farm did not cause (another process on the
    host) would otherwise stop every task for as long as it lasts, which the 10-minute soak on a
    busy machine showed (the learned timeout grew to 100 s and the farm ran ~5% of its tasks)."""

    strategy_id = "system"
    categories = frozenset({"system_overload", "system_resource", "task_resource", "worker_resource"})
    applicable_reads = frozenset({"category"})
    applicable_pure = True  # the coordinator's methods are looked up, never called
    CPU_LIMIT = 90.0
    MEMORY_LIMIT = 90.0

    def __init__(
        self,
        coordinator: CoordinatorProtocol | None,
        sampler: Any = None,
        settle: float = 1.0,
        max_pause: float = 2.0,
        patience: float = 10.0,
    ) -> None:
        super().__init__(coordinator, "System load shedding", RecoveryLevel.CRITICAL)
        self.sampler = sampler
        self.settle = settle
        self.max_pause = max_pause
        self.patience = patience
        self._holders = 0  # runs currently shedding load
        self._saved: tuple[bool, int] | None = None  # the settings before the first of them
        self._paused_at: float | None = None  # when shedding paused scheduling, until it resumes

    def is_applicable(self, error_info: dict[str, Any]) -> bool:
        category = str(error_info.get("category") or "")
        return category in self.categories and _has(
            self.coordinator, "pause_scheduling", "resume_scheduling", "get_max_concurrency", "set_max_concurrency"
        )

    def overloaded(self) -> bool:
        if self.sampler is None:
            return False
        snap = self.sampler.latest()
        return snap.get("cpu_percent", 0.0) > self.CPU_LIMIT or snap.get("memory_percent", 0.0) > self.MEMORY_LIMIT

    async def _shed(self, error_info: dict[str, Any]) -> None:
        """Enter load shedding. Runs for several groups may overlap: the first saves the settings
        as they were and sheds, the last one out restores them (see :meth:`_restore`)."""
        c = self._c()
        self._holders += 1
        if self._holders > 1:
            error_info["details"]["shed"] = {"joined": True}
            return
        was_paused = c.scheduling_paused()
        old_limit = await c.get_max_concurrency()
        self._saved = (was_paused, old_limit)
        running = 0
        if _has(c, "health"):
            counts = (await c.health()).get("tasks", {})
            running = sum(int(counts.get(s, 0)) for s in ("assigned", "running"))
        new_limit = max(1, (old_limit or running or 2) // 2)
        await c.set_max_concurrency(new_limit)
        if not was_paused:
            await c.pause_scheduling()
            self._paused_at = time.monotonic()
        error_info["details"]["shed"] = {"paused": not was_paused, "max_concurrency": new_limit, "was": old_limit}

    async def _throttle(self, error_info: dict[str, Any]) -> None:
        """After ``max_pause``, scheduling resumes at the reduced limit."""
        if self._paused_at is not None and time.monotonic() - self._paused_at >= self.max_pause:
            self._paused_at = None
            await self._c().resume_scheduling()
            error_info["details"]["resumed_throttled"] = True

    async def _restore(self) -> None:
        self._holders -= 1
        if self._holders > 0 or self._saved is None:
            return
        (was_paused, old_limit), self._saved = self._saved, None
        self._paused_at = None
        c = self._c()
        await c.set_max_concurrency(old_limit)
        if not was_paused:
            await c.resume_scheduling()

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        c = self._c()
        if not self.overloaded():  # the symptom is not there (or cannot be seen): nothing to shed
            raise NotApplicable("the machine is not overloaded now")
        deadline = _deadline(error_info)
        try:
            await self._shed(error_info)
            deadline = min(deadline, time.monotonic() + self.patience)
            quiet_since: float | None = None
            while time.monotonic() < deadline:
                if self.overloaded():
                    quiet_since = None
                else:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since >= self.settle:
                        break
                await self._throttle(error_info)
                await asyncio.sleep(min(0.2, _remaining(deadline)))
            else:
                return False
        finally:  # also on timeout or cancellation
            await self._restore()
        health = await c.health() if _has(c, "health") else {"healthy": True}
        return not self.overloaded() and bool(health.get("healthy", True))


BUILTIN_CLASSES: dict[str, type[RecoveryStrategy]] = {
    "retry": RetryStrategy,
    "worker": WorkerRecoveryStrategy,
    "database": DatabaseRecoveryStrategy,
    "coordinator": CoordinatorRecoveryStrategy,
    "system": SystemRecoveryStrategy,
}
