"""An adapter that gives a seed-framework-shaped coordinator the :class:`CoordinatorProtocol`.

Such a coordinator keeps ``workers`` (id -> dict with ``status``, ``last_heartbeat``),
``tasks`` (id -> dict with ``status``), ``running_tasks`` (task -> worker), ``pending_tasks``
and ``failed_tasks`` (sets), ``worker_connections`` (id -> connection with ``close()``) and
``db`` (a DuckDB connection). The adapter acts on exactly those structures.

A task failed for good carries ``failed_for_good = True`` and its ``failure_reason`` in its dict
and stays in ``failed_tasks``; neither it nor a completed task is ever queued again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from datetime import datetime
from typing import Any

logger = logging.getLogger(__name__)


def heartbeat_time(value: Any) -> float | None:
    """A worker's ``last_heartbeat`` as epoch seconds, in every form the seed wrote: an epoch
    number (``time.time()``), a datetime (naive is local time, as ``datetime.now()`` gives), or an
    ISO-8601 string (``datetime.now().isoformat()``, or a worker's own timestamp, ``Z`` and offsets
    included; an epoch number as a string too). None when there is none, or it does not read."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, datetime):
        try:
            return value.timestamp()
        except (OverflowError, OSError, ValueError):
            return None
    return None


class SeedCoordinatorAdapter:
    """Wraps a seed-shaped coordinator. ``heartbeat_timeout`` decides when a worker counts as alive."""

    def __init__(self, coordinator: Any, heartbeat_timeout: float = 30.0) -> None:
        self.c = coordinator
        self.heartbeat_timeout = heartbeat_timeout
        for attr in ("workers", "tasks", "running_tasks", "pending_tasks"):
            if not hasattr(coordinator, attr):
                raise ValueError(f"coordinator: a seed-shaped coordinator needs the attribute {attr!r}")
        if not hasattr(coordinator, "failed_tasks"):
            coordinator.failed_tasks = set()
        self._paused = False
        self._unreadable_logged = False  # a last_heartbeat that does not read is said once
        self._max_concurrency = int(getattr(coordinator, "max_concurrent_tasks", 0) or 0)

    @staticmethod
    def is_seed_shaped(obj: Any) -> bool:
        return all(hasattr(obj, a) for a in ("workers", "tasks", "running_tasks", "pending_tasks")) and not hasattr(
            obj, "requeue_worker_tasks"
        )

    async def _call(self, name: str, *args: Any) -> Any:
        fn = getattr(self.c, name, None)
        if fn is None:
            return None
        result = fn(*args)
        return await result if inspect.isawaitable(result) else result

    async def health(self) -> dict[str, Any]:
        db_ok = await self._db_ok()
        active = [w for w in self.c.workers if await self.worker_alive(w)]
        return {
            "healthy": db_ok and not self._paused,
            "components": {},
            "database": db_ok,
            "scheduling_paused": self._paused,
            "workers": {"total": len(self.c.workers), "active": len(active), "heartbeating": len(active)},
            "tasks": {
                "pending": len(self.c.pending_tasks),
                "running": len(self.c.running_tasks),
                "failed": len(self.c.failed_tasks),
            },
        }

    async def _db_ok(self) -> bool:
        db = getattr(self.c, "db", None)
        if db is None:
            return True
        from coordinator_plugins.error_handling.storage.duckdb.foreign import connection_works

        return await asyncio.to_thread(connection_works, db)

    async def worker_info(self, worker_id: str) -> dict[str, Any] | None:
        w = self.c.workers.get(worker_id)
        return dict(w) if isinstance(w, dict) else None

    async def task_info(self, task_id: str) -> dict[str, Any] | None:
        t = self.c.tasks.get(task_id)
        if not isinstance(t, dict):
            return None
        return {"task_id": task_id, **t, "final": self._final(t)}

    @staticmethod
    def _final(t: Any) -> bool:
        return isinstance(t, dict) and (t.get("status") == "completed" or bool(t.get("failed_for_good")))

    async def drain_worker(self, worker_id: str) -> bool:
        w = self.c.workers.get(worker_id)
        if w is None:
            return False
        w["draining"] = True
        return True

    async def undrain_worker(self, worker_id: str) -> bool:
        w = self.c.workers.get(worker_id)
        if w is None:
            return False
        w.pop("draining", None)
        return True

    async def requeue_worker_tasks(self, worker_id: str) -> list[str]:
        moved = sorted(t for t, w in self.c.running_tasks.items()
                       if w == worker_id and not self._final(self.c.tasks.get(t)))
        for tid in moved:
            del self.c.running_tasks[tid]
            self.c.pending_tasks.add(tid)
            if isinstance(self.c.tasks.get(tid), dict):
                self.c.tasks[tid]["status"] = "pending"
                self.c.tasks[tid].pop("worker_id", None)
        return moved

    async def worker_alive(self, worker_id: str) -> bool:
        w = self.c.workers.get(worker_id)
        if not isinstance(w, dict) or w.get("status") not in ("active", "idle", "busy"):
            return False
        raw = w.get("last_heartbeat")
        beat = heartbeat_time(raw)
        if beat is None and raw is not None and not self._unreadable_logged:
            self._unreadable_logged = True
            logger.warning("seed coordinator: worker %s has a last_heartbeat that does not read as a time (%r): "
                           "such workers count as alive; store time.time(), a datetime or an ISO-8601 string",
                           worker_id, raw)
        return beat is None or time.time() - beat <= self.heartbeat_timeout

    async def wait_worker_serving(self, worker_id: str, timeout: float) -> bool:
        """Alive, connected and not drained: a seed coordinator hands work to every such worker."""
        deadline = time.monotonic() + timeout
        while True:
            w = self.c.workers.get(worker_id)
            connected = worker_id in getattr(self.c, "worker_connections", {worker_id: 1})
            if await self.worker_alive(worker_id) and connected and not (isinstance(w, dict) and w.get("draining")):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)

    async def restart_worker(self, worker_id: str, timeout: float = 30.0) -> str | None:
        """Close the worker's connection so that it reconnects, then wait for it to come back."""
        conn = getattr(self.c, "worker_connections", {}).pop(worker_id, None)
        if conn is not None and hasattr(conn, "close"):
            result = conn.close()
            if inspect.isawaitable(result):
                await result
        w = self.c.workers.get(worker_id)
        if isinstance(w, dict):
            w["status"] = "reconnecting"
        await self._call("restart_worker", worker_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.worker_alive(worker_id) and worker_id in getattr(
                self.c, "worker_connections", {worker_id: 1}
            ):
                return worker_id
            await asyncio.sleep(0.05)
        return None

    async def retry_task(self, task_id: str) -> bool:
        t = self.c.tasks.get(task_id)
        if not isinstance(t, dict) or self._final(t):  # completed or failed for good: never again
            return False
        self.c.failed_tasks.discard(task_id)
        self.c.running_tasks.pop(task_id, None)
        self.c.pending_tasks.add(task_id)
        t["status"] = "pending"
        return True

    async def fail_task(self, task_id: str, reason: str) -> bool:
        t = self.c.tasks.get(task_id)
        if not isinstance(t, dict) or t.get("status") == "completed":
            return False
        self.c.pending_tasks.discard(task_id)
        self.c.running_tasks.pop(task_id, None)
        self.c.failed_tasks.add(task_id)
        t.update(status="failed", failed_for_good=True, failure_reason=reason)
        logger.warning("seed coordinator: task %s failed for good: %s", task_id, reason)
        return True

    async def wait_task(self, task_id: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t = self.c.tasks.get(task_id)
            if isinstance(t, dict) and t.get("status") in ("completed", "failed"):
                return str(t["status"])
            await asyncio.sleep(0.05)
        return None

    async def reconnect_database(self) -> bool:
        path = getattr(self.c, "db_path", None)
        if path is None:
            return await self._db_ok()
        from coordinator_plugins.error_handling.storage.duckdb.foreign import reopen

        old = getattr(self.c, "db", None)
        try:
            con = await asyncio.to_thread(reopen, path)
        except Exception as exc:
            logger.error("seed coordinator: database reconnect failed: %s", exc)
            return False
        self.c.db = con
        if old is not None:
            try:
                old.close()
            except Exception:
                pass
        return True

    def component_names(self) -> list[str]:
        return [n[len("restart_") :] for n in dir(self.c) if n.startswith("restart_") and n != "restart_worker"]

    async def component_healthy(self, name: str) -> bool:
        check = getattr(self.c, f"{name}_healthy", None)
        if check is None:
            return name in self.component_names()
        result = check()
        return bool(await result if inspect.isawaitable(result) else result)

    async def restart_component(self, name: str) -> bool:
        """Call ``restart_<name>``; verified by ``<name>_healthy()`` when the coordinator has one,
        else only by the restart method itself returning True (None proves nothing)."""
        if name not in self.component_names():
            return False
        result = await self._call(f"restart_{name}")
        if callable(getattr(self.c, f"{name}_healthy", None)):
            return await self.component_healthy(name)
        return result is True

    async def reload_state(self) -> bool:
        for tid in list(self.c.running_tasks):
            if self._final(self.c.tasks.get(tid)):
                del self.c.running_tasks[tid]
            elif not await self.worker_alive(self.c.running_tasks[tid]):
                self.c.pending_tasks.add(tid)
                del self.c.running_tasks[tid]
        return True

    async def pause_scheduling(self) -> None:
        self._paused = True
        if hasattr(self.c, "scheduling_paused"):
            self.c.scheduling_paused = True

    async def resume_scheduling(self) -> None:
        self._paused = False
        if hasattr(self.c, "scheduling_paused"):
            self.c.scheduling_paused = False

    def scheduling_paused(self) -> bool:
        return self._paused

    async def get_max_concurrency(self) -> int:
        return int(getattr(self.c, "max_concurrent_tasks", self._max_concurrency) or 0)

    async def set_max_concurrency(self, value: int) -> None:
        self._max_concurrency = value
        if hasattr(self.c, "max_concurrent_tasks"):
            self.c.max_concurrent_tasks = value
