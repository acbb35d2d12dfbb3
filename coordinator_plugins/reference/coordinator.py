"""The reference coordinator: workers, a task queue, a scheduler loop and a heartbeat monitor.

Its async actions implement :class:`CoordinatorProtocol` against the live state and the real
worker processes it launched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from coordinator_plugins.reference.actions import CoordinatorActions
from coordinator_plugins.reference.db import CoordinatorDB
from coordinator_plugins.reference.db_pg import PostgresCoordinatorDB
from coordinator_plugins.reference.fleet import fleet_tick
from coordinator_plugins.reference.launcher import WorkerLauncher
from coordinator_plugins.reference.model import Task, Worker
from coordinator_plugins.reference.settings import CoordinatorSettings

logger = logging.getLogger(__name__)


class Component:
    """An internal loop of the coordinator that can be stopped, restarted and health-checked."""

    def __init__(
        self, name: str, interval: float, tick: Callable[[], Awaitable[None]], wake: asyncio.Event | None = None
    ) -> None:
        self.name = name
        self.interval = interval
        self.tick = tick
        self.wake = wake
        self.task: asyncio.Task[None] | None = None
        self.last_tick = 0.0
        self.starts = 0  # each start is a new life: an outage after it is a new outage
        self.errors = 0
        self.ticks = 0  # ticks that completed: a restart is verified by the next one

    async def _loop(self) -> None:
        while True:
            self.last_tick = time.monotonic()
            try:
                await self.tick()
                self.ticks += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1
                logger.exception("component %s tick failed", self.name)
            if self.wake is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        await self.wake.wait()
                self.wake.clear()
            else:
                await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self.task is None or self.task.done():
            self.starts += 1
            self.last_tick = time.monotonic()  # a grace period until its first tick
            self.task = asyncio.create_task(self._loop(), name=f"coordinator-{self.name}")

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            # Bounded: a stop must never hang its caller, whatever the loop was awaiting.
            done, _ = await asyncio.wait({task}, timeout=5.0)
            if not done:
                logger.error("component %s did not stop within 5 s of its cancellation", self.name)

    def healthy(self) -> bool:
        return (
            self.task is not None
            and not self.task.done()
            and time.monotonic() - self.last_tick < 3 * self.interval + 1.0
        )


class Coordinator(CoordinatorActions):
    """State and actions of the reference coordinator (routes live in :mod:`.app`)."""

    def __init__(self, settings: CoordinatorSettings | None = None) -> None:
        self.settings = settings or CoordinatorSettings()
        self.workers: dict[str, Worker] = {}
        self.tasks: dict[str, Task] = {}
        self.pending: deque[str] = deque()
        self.paused = False
        self.max_concurrency = self.settings.max_concurrency
        if not self.settings.coordinator_id:
            self.settings.coordinator_id = f"{socket.gethostname()}-{os.getpid()}"
        self.db: CoordinatorDB | PostgresCoordinatorDB = (
            PostgresCoordinatorDB(self.settings.database, self.settings.coordinator_id)
            if self.settings.fleet
            else CoordinatorDB(self.settings.database)
        )
        self.takeovers: list[dict[str, Any]] = []  # dead fleet members whose tasks moved here
        self.launcher = WorkerLauncher(limit=self.settings.local_worker_limit)
        self._sched_wake = asyncio.Event()
        self.components: dict[str, Component] = {
            "scheduler": Component(
                "scheduler", self.settings.scheduler_interval, self._schedule_tick, self._sched_wake
            ),
            "heartbeat_monitor": Component(
                "heartbeat_monitor", max(0.1, self.settings.heartbeat_interval / 2), self._heartbeat_tick
            ),
            "db_flusher": Component("db_flusher", 0.2, self._flush_tick),
        }
        if self.settings.fleet:
            self.components["fleet"] = Component("fleet", min(1.0, self.settings.lease_ttl / 5),
                                                 lambda: fleet_tick(self))
        self.enhanced_error_handling: Any = None  # set by the error-handling plugin
        self.url = ""
        self._bg: set[asyncio.Task[Any]] = set()
        self._db_error_reported = False
        self.lost_events = 0
        self.stopping = False
        self._stopped: asyncio.Future[None] | None = None
        self._down: dict[str, tuple[int, float]] = {}  # loop -> (its start count, when) reported down

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self, url: str) -> None:
        self.url = url
        self.launcher.url = url
        await self.db.open()
        for comp in self.components.values():
            comp.start()

    async def launch_workers(self, count: int | None = None, prefix: str = "worker") -> list[str]:
        """Start local worker processes (needs the coordinator's url, known once it listens)."""
        n = self.settings.workers if count is None else count
        started: list[str] = []
        i = 0
        while len(started) < n:
            i += 1
            wid = f"{prefix}-{i}"
            if self.launcher.owns(wid):
                continue
            await self.launcher.start(wid, ["--max-tasks", str(self.settings.worker_max_tasks)])
            started.append(wid)
        return started

    async def stop(self) -> None:
        """Stop the loops, the workers and the database; a second call waits for the first."""
        if self._stopped is None:
            self._stopped = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopped)

    async def _stop(self) -> None:
        self.stopping = True  # no more error reports: stopping workers is not a fault
        for name in ("heartbeat_monitor", "scheduler"):
            await self.components[name].stop()
        self.launcher.closed = True
        await self.launcher.stop_all()
        await self.components["db_flusher"].stop()
        for t in list(self._bg):
            t.cancel()
        await asyncio.gather(*self._bg, return_exceptions=True)
        await self.db.close()

    def report(self, error: BaseException | str, **context: Any) -> None:
        """Hand an error to the error-handling plugin, when one is installed (never raises)."""
        eh = self.enhanced_error_handling
        if self.stopping:
            return
        if eh is None:
            logger.warning("coordinator error (no error handling installed): %s %s", error, context)
            return
        task = asyncio.ensure_future(eh.report_error(error, context))
        self._bg.add(task)
        task.add_done_callback(self._report_done)

    def _report_done(self, task: asyncio.Task[Any]) -> None:
        self._bg.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("reporting an error failed: %r", task.exception())

    # -- tasks -------------------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any], task_id: str | None = None) -> Task:
        task = Task(task_id or f"t-{uuid.uuid4().hex[:12]}", dict(spec))
        if task.task_id in self.tasks:
            raise ValueError(f"task {task.task_id} exists")
        self.tasks[task.task_id] = task
        self.pending.append(task.task_id)
        self._persist(task)
        self._sched_wake.set()
        return task

    def _persist(self, task: Task) -> None:
        self.db.mark(task.task_id, task.spec, task.status, task.worker_id, task.attempt, task.result, task.final)

    def requeue(self, task: Task) -> None:
        """Queue ``task`` for another attempt, first in line (a fleet takeover, ``fleet.py``)."""
        self._to_pending(task, front=True)

    def _to_pending(self, task: Task, front: bool = True) -> None:
        """Back to the queue for another attempt; never a task that completed or failed for good."""
        if task.final:
            logger.warning("task %s is %s: not queued again", task.task_id,
                           "completed" if task.status == "completed" else "failed for good")
            return
        if task.worker_id and task.worker_id in self.workers:
            w = self.workers[task.worker_id]
            w.tasks.discard(task.task_id)
            with contextlib.suppress(ValueError):
                w.inbox.remove(task.task_id)
        task.status, task.worker_id, task.started_at = "pending", None, None
        task.queued_at = time.monotonic()
        if task.task_id not in self.pending:
            (self.pending.appendleft if front else self.pending.append)(task.task_id)
        self._persist(task)
        self._sched_wake.set()

    def running_count(self) -> int:
        return sum(len(w.tasks) for w in self.workers.values())

    async def _schedule_tick(self) -> None:
        self._watch("heartbeat_monitor")
        if self.paused:
            return
        free = [w for w in self.workers.values() if w.schedulable()]
        waiting: list[str] = []  # tasks kept for a worker they have not failed on
        try:
            while self.pending and free:
                if self.max_concurrency and self.running_count() >= self.max_concurrency:
                    return
                task = self.tasks.get(self.pending.popleft())
                if task is None or task.status != "pending":
                    continue
                worker = self._place(task, free)
                if worker is None:
                    waiting.append(task.task_id)
                    continue
                task.status, task.worker_id = "assigned", worker.worker_id
                task.attempt += 1
                worker.tasks.add(task.task_id)
                worker.inbox.append(task.task_id)
                worker.wake.set()
                self._persist(task)
                free = [w for w in free if w.schedulable()]
        finally:
            self.pending.extendleft(reversed(waiting))

    def _place(self, task: Task, free: list[Worker]) -> Worker | None:
        """The least busy free worker, preferring one the task has not failed on: a task that
        fails again elsewhere shows the fault follows the task, not the worker. None: wait for
        such a worker, busy now, for at most ``heartbeat_timeout`` seconds."""
        if task.failed_on:
            fresh = [w for w in free if w.worker_id not in task.failed_on]
            if fresh:
                return min(fresh, key=lambda w: len(w.tasks))
            if time.monotonic() - task.queued_at < self.settings.heartbeat_timeout and any(
                w.status == "active" and not w.draining and w.worker_id not in task.failed_on
                for w in self.workers.values()
            ):
                return None
        return min(free, key=lambda w: len(w.tasks))

    def take_assignments(self, worker: Worker) -> list[dict[str, Any]]:
        worker.polls += 1
        out = []
        while worker.inbox:
            task = self.tasks[worker.inbox.popleft()]
            if task.status == "assigned" and task.worker_id == worker.worker_id:
                task.status, task.started_at = "running", time.monotonic()
                self._persist(task)
                out.append({"task_id": task.task_id, "attempt": task.attempt, "spec": task.spec})
        worker.wake.clear()
        return out

    def accept_result(self, task_id: str, worker_id: str, attempt: int, body: dict[str, Any]) -> bool:
        """Record a result; False for a stale one (the task was requeued since)."""
        task = self.tasks.get(task_id)
        if (
            task is None
            or task.worker_id != worker_id
            or task.attempt != attempt
            or task.status not in ("assigned", "running")
        ):
            return False
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.tasks.discard(task_id)
        status = body.get("status")
        task.finished_at = time.monotonic()
        if status == "completed":
            task.status = "completed"
            task.result = {k: body[k] for k in ("outcome", "returncode", "output") if k in body}
            task.completions += 1
        else:  # an infrastructure error; a test that fails is a result ("completed", outcome "fail")
            task.status = "failed"
            task.error = str(body.get("error") or "task error")
            task.result = {"outcome": "error", "error": task.error}
            task.failed_on.append(worker_id)
            self.report(
                task.error,
                component="task",
                operation="run_task",
                task_id=task_id,
                worker_id=worker_id,
                exception_type=body.get("exception_type"),
                error_type=body.get("error_type") or None,
            )
        task.done.set()
        self._persist(task)
        self._sched_wake.set()
        return True

    # -- workers -------------------------------------------------------------------------------------
    def register_worker(
        self, worker_id: str, pid: int | None, max_tasks: int, capabilities: dict[str, Any] | None = None
    ) -> Worker:
        old = self.workers.get(worker_id)
        if old is not None:
            for tid in list(old.tasks):  # the previous incarnation's work is gone with it
                self._to_pending(self.tasks[tid])
            old.pid, old.max_tasks, old.status = pid, max_tasks, "active"
            old.capabilities = capabilities or {}
            old.last_heartbeat = time.monotonic()
            old.incarnation += 1
            old.polls = 0  # a new incarnation serves once it asks for work
            old.inbox.clear()
            worker = old
        else:
            worker = Worker(worker_id, pid, max_tasks, capabilities or {})
            self.workers[worker_id] = worker
        self._sched_wake.set()
        return worker

    def heartbeat(self, worker_id: str) -> bool:
        worker = self.workers.get(worker_id)
        if worker is None or worker.status != "active":
            return False
        worker.last_heartbeat = time.monotonic()
        return True

    def _watch(self, name: str) -> None:
        """Report an internal loop that stopped or stalled: once per outage, and again every
        ``watchdog_repeat`` seconds while it stays down.

        An outage is new when the loop was started again since the last report, even if no
        watchdog tick saw it healthy in between: a recovery may restart it and a fault stop it
        again within one tick. Reporting only on a healthy-to-down edge lost that second outage
        (the group was resolved by the restart and the loop stayed down for good)."""
        comp = self.components[name]
        if comp.healthy():
            self._down.pop(name, None)
            return
        now = time.monotonic()
        seen = self._down.get(name)
        if seen is not None and seen[0] == comp.starts and now - seen[1] < self.settings.watchdog_repeat:
            return
        self._down[name] = (comp.starts, now)
        self.report(f"coordinator component {name} stopped or stalled", component=name,
                    operation="watchdog", error_type="scheduling" if name == "scheduler" else "coordination")

    async def _heartbeat_tick(self) -> None:
        self._watch("scheduler")
        self._watch("db_flusher")
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.status == "active" and now - worker.last_heartbeat > self.settings.heartbeat_timeout:
                self.mark_lost(
                    worker, f"worker {worker.worker_id} missed heartbeats for {now - worker.last_heartbeat:.1f}s"
                )
        for task in list(self.tasks.values()):
            if (
                task.status == "running"
                and task.started_at is not None
                and now - task.started_at > task.timeout
                and not task.spec.get("_timeout_reported")
            ):
                task.spec["_timeout_reported"] = True
                self.report(
                    f"task {task.task_id} exceeded its timeout of {task.timeout:.1f}s on worker {task.worker_id}",
                    component="task",
                    operation="run_task",
                    error_type="timeout",
                    task_id=task.task_id,
                    worker_id=task.worker_id,
                )

    def mark_lost(self, worker: Worker, reason: str) -> list[str]:
        worker.status = "lost"
        moved = [tid for tid in list(worker.tasks)]
        for tid in moved:
            self._to_pending(self.tasks[tid])
        self.lost_events += 1
        logger.warning("%s; %d task(s) back to pending", reason, len(moved))
        self.report(
            reason,
            component="worker",
            operation="heartbeat",
            worker_id=worker.worker_id,
            error_type="worker",
            metadata={"requeued": moved},
        )
        return moved

    async def _flush_tick(self) -> None:
        if self.db.ok:  # healthy again (a flush or a reconnect worked): the next outage is news
            self._db_error_reported = False
        if not self.db.pending_rows:
            return
        try:
            await self.db.flush()
        except Exception as exc:
            if not self._db_error_reported:
                self._db_error_reported = True
                self.report(exc, component="database", operation="write_state")
