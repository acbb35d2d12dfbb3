"""The reference coordinator's implementation of :class:`CoordinatorProtocol`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

from coordinator_plugins.reference.launcher import LauncherFull
from coordinator_plugins.reference.model import FINAL_TASK_STATES, Task, Worker

if TYPE_CHECKING:
    from coordinator_plugins.reference.coordinator import Component
    from coordinator_plugins.reference.db import CoordinatorDB
    from coordinator_plugins.reference.db_pg import PostgresCoordinatorDB
    from coordinator_plugins.reference.launcher import WorkerLauncher
    from coordinator_plugins.reference.settings import CoordinatorSettings

logger = logging.getLogger(__name__)


class CoordinatorActions:
    """Mixed into :class:`Coordinator`; every action acts on live state and real processes."""

    settings: CoordinatorSettings
    workers: dict[str, Worker]
    tasks: dict[str, Task]
    pending: deque[str]
    paused: bool
    max_concurrency: int
    db: CoordinatorDB | PostgresCoordinatorDB
    launcher: WorkerLauncher
    components: dict[str, Component]
    _sched_wake: asyncio.Event

    def _to_pending(self, task: Task, front: bool = True) -> None:
        raise NotImplementedError

    def _persist(self, task: Task) -> None:
        raise NotImplementedError

    async def health(self) -> dict[str, Any]:
        comps = {name: c.healthy() for name, c in self.components.items()}
        db_ok = self.db.ok and await self.db.ping()
        now = time.monotonic()
        active = [w for w in self.workers.values() if w.status == "active"]
        fresh = [w for w in active if now - w.last_heartbeat <= self.settings.heartbeat_timeout]
        counts: dict[str, int] = {}
        for t in self.tasks.values():
            counts[t.status] = counts.get(t.status, 0) + 1
        return {
            "healthy": all(comps.values()) and db_ok and not self.paused,
            "components": comps,
            "database": db_ok,
            "scheduling_paused": self.paused,
            "max_concurrency": self.max_concurrency,
            "workers": {
                "total": len(self.workers),
                "active": len(active),
                "heartbeating": len(fresh),
                "lost": sum(1 for w in self.workers.values() if w.status == "lost"),
            },
            "tasks": counts,
        }

    async def worker_info(self, worker_id: str) -> dict[str, Any] | None:
        w = self.workers.get(worker_id)
        if w is None:
            return None
        why = self.why_not_restartable(worker_id)
        # for a worker it launched, whether its process still runs (a heartbeat is seconds behind)
        running = {"process_running": self.launcher.running(worker_id)} if self.launcher.owns(worker_id) else {}
        return {**w.to_dict(), "restartable": why is None, **({"why_not_restartable": why} if why else {}),
                **running}

    def why_not_restartable(self, worker_id: str) -> str | None:
        """Why :meth:`restart_worker` may not act on ``worker_id`` (None when it may): only a
        worker this coordinator launched is restarted, and only one the operator marked
        replaceable (``replaceable_workers``) is replaced by a local process, while fewer than
        ``max_local_workers`` run. A registration alone never makes this coordinator start one."""
        if self.launcher.owns(worker_id):
            return None
        if not self.settings.may_replace(worker_id):
            return (f"worker {worker_id[:200]} was not launched by this coordinator and [coordinator] "
                    "replaceable_workers does not name it: it is neither restarted nor replaced")
        if not self.launcher.url:
            return f"worker {worker_id[:200]} is replaceable, but the coordinator does not listen yet"
        if self.launcher.running_count() >= self.launcher.limit:
            return (f"worker {worker_id[:200]} is replaceable, but {self.launcher.limit} worker processes run "
                    "here already ([coordinator] max_local_workers)")
        return None

    async def task_info(self, task_id: str) -> dict[str, Any] | None:
        t = self.tasks.get(task_id)
        return t.to_dict() if t else None

    async def drain_worker(self, worker_id: str) -> bool:
        w = self.workers.get(worker_id)
        if w is None:
            return False
        w.draining = True
        return True

    async def undrain_worker(self, worker_id: str) -> bool:
        w = self.workers.get(worker_id)
        if w is None:
            return False
        w.draining = False
        self._sched_wake.set()
        return True

    async def requeue_worker_tasks(self, worker_id: str) -> list[str]:
        w = self.workers.get(worker_id)
        if w is None:
            return []
        moved = sorted(t for t in w.tasks if not self.tasks[t].final)
        for tid in moved:
            self._to_pending(self.tasks[tid])
        return moved

    async def worker_alive(self, worker_id: str) -> bool:
        w = self.workers.get(worker_id)
        return (
            w is not None
            and w.status == "active"
            and time.monotonic() - w.last_heartbeat <= self.settings.heartbeat_timeout
        )

    async def wait_worker_serving(self, worker_id: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            w = self.workers.get(worker_id)
            if w is not None and w.polls > 0 and await self.worker_alive(worker_id):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)

    async def _wait_registered(self, worker_id: str, since_incarnation: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            w = self.workers.get(worker_id)
            if w is not None and w.incarnation > since_incarnation and w.status == "active":
                beat = w.last_heartbeat
                # Registered; wait for one heartbeat after registration as proof of life.
                while time.monotonic() < deadline:
                    if w.last_heartbeat > beat and w.status == "active":
                        return True
                    await asyncio.sleep(0.05)
                return False
            await asyncio.sleep(0.05)
        return False

    async def restart_worker(self, worker_id: str, timeout: float = 30.0) -> str | None:
        w = self.workers.get(worker_id)
        incarnation = w.incarnation if w else 0
        why = self.why_not_restartable(worker_id)
        if why is not None:
            logger.warning("recovery: %s", why)
            return None
        if self.launcher.owns(worker_id):
            await self.launcher.restart(worker_id)
            return worker_id if await self._wait_registered(worker_id, incarnation, timeout) else None
        # Another's worker the operator marked replaceable: a local replacement, at our own size.
        replacement = f"{worker_id[:190]}-r{uuid.uuid4().hex[:4]}"  # worker ids are at most 200 long
        return await self._start_replacement(
            replacement, ["--max-tasks", str(self.settings.worker_max_tasks)], timeout)

    async def replace_worker(self, worker_id: str, timeout: float = 30.0) -> str | None:
        """Retire a worker this coordinator launched and start a new process under a new id (a
        clean local state, where a restart keeps the old one); the new id once it is registered
        and heartbeating, else None. A worker it did not launch is not replaced here."""
        old = self.workers.get(worker_id)
        if not self.launcher.owns(worker_id) or old is None:
            logger.warning("recovery: worker %s was not launched here: not replaced", worker_id[:200])
            return None
        await self.launcher.stop(worker_id, grace=1.0)
        for tid in list(old.tasks):  # the retired worker's work goes back to the queue
            self._to_pending(self.tasks[tid])
        old.status, old.draining = "stopped", True
        base = worker_id.split(".", 1)[0][:190]  # worker ids are at most 200 long
        return await self._start_replacement(f"{base}.n{uuid.uuid4().hex[:4]}", self.launcher.args.get(worker_id),
                                             timeout)

    async def _start_replacement(self, replacement: str, args: list[str] | None, timeout: float) -> str | None:
        """Launch ``replacement``; its id once it registered within ``timeout``, else None (and
        the process stopped)."""
        try:
            await self.launcher.start(replacement, args)
        except LauncherFull as exc:  # another start took the last place meanwhile
            logger.warning("recovery: %s", exc)
            return None
        if await self._wait_registered(replacement, 0, timeout):
            return replacement
        await self.launcher.stop(replacement)
        return None

    async def retry_task(self, task_id: str) -> bool:
        task = self.tasks.get(task_id)
        if task is None or task.final:  # completed, or failed for good: never run again
            return False
        if task.status in ("failed", "assigned", "running"):
            task.done.clear()
            task.spec.pop("_timeout_reported", None)
            self._to_pending(task)
        return True

    async def fail_task(self, task_id: str, reason: str) -> bool:
        task = self.tasks.get(task_id)
        if task is None or task.status == "completed":
            return False
        if task.failure_reason is not None:
            return True
        w = self.workers.get(task.worker_id or "")
        if w is not None:
            w.tasks.discard(task_id)
            with contextlib.suppress(ValueError):
                w.inbox.remove(task_id)
        with contextlib.suppress(ValueError):
            self.pending.remove(task_id)
        task.status, task.failure_reason = "failed", reason
        task.error = task.error or reason
        task.result = {"outcome": "error", "error": task.error, "failed_for_good": reason}
        task.done.set()
        self._persist(task)
        self._sched_wake.set()
        logger.warning("task %s failed for good: %s", task_id, reason)
        return True

    async def wait_task(self, task_id: str, timeout: float) -> str | None:
        task = self.tasks.get(task_id)
        if task is None:
            return None
        deadline = time.monotonic() + timeout
        while task.status not in FINAL_TASK_STATES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                async with asyncio.timeout(min(remaining, 0.5)):
                    await task.done.wait()
            except TimeoutError:
                pass
        return task.status

    async def reconnect_database(self) -> bool:
        return await self.db.reconnect()

    def component_names(self) -> list[str]:
        return list(self.components)

    async def component_healthy(self, name: str) -> bool:
        comp = self.components.get(name)
        return comp is not None and comp.healthy()

    async def restart_component(self, name: str) -> bool:
        comp = self.components.get(name)
        if comp is None:
            return False
        await comp.stop()
        ticks = comp.ticks
        comp.start()
        # Verified only by a tick of the new loop: start() alone makes it look healthy.
        deadline = time.monotonic() + max(2.0, 3 * comp.interval)
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            if comp.ticks > ticks and comp.healthy():
                return True
        return False

    async def stop_component(self, name: str) -> bool:
        """Fault injection: stop an internal loop as a crash of it would."""
        comp = self.components.get(name)
        if comp is None:
            return False
        await comp.stop()
        return True

    async def reload_state(self) -> bool:
        rows = await self.db.load_tasks()
        restored = 0
        for row in rows:  # a task that completed or failed is never brought back to run
            if row["task_id"] not in self.tasks and row["status"] not in FINAL_TASK_STATES:
                task = Task(row["task_id"], row["spec"], attempt=row["attempt"] or 0)
                self.tasks[task.task_id] = task
                restored += 1
        queued = set(self.pending)
        for task in self.tasks.values():
            w = self.workers.get(task.worker_id or "")
            if task.status in ("assigned", "running") and (
                w is None or w.status != "active" or task.task_id not in w.tasks
            ):
                self._to_pending(task)
            elif task.status == "pending" and task.task_id not in queued:
                self.pending.append(task.task_id)
        self.pending = deque(dict.fromkeys(t for t in self.pending if self.tasks[t].status == "pending"))
        self._sched_wake.set()
        logger.info("state reloaded: %d task(s) restored from the database", restored)
        return True

    async def pause_scheduling(self) -> None:
        self.paused = True

    async def resume_scheduling(self) -> None:
        self.paused = False
        self._sched_wake.set()

    def scheduling_paused(self) -> bool:
        return self.paused

    async def get_max_concurrency(self) -> int:
        return self.max_concurrency

    async def set_max_concurrency(self, value: int) -> None:
        if value < 0:
            raise ValueError("max_concurrency: expected >= 0")
        self.max_concurrency = value
        self._sched_wake.set()
