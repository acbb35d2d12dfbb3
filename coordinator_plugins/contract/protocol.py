"""The coordinator contract that recovery strategies act through."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class CoordinatorProtocol(Protocol):
    """Async actions a coordinator offers to recovery. Each really acts and reports honestly.

    Implemented by :class:`coordinator_plugins.reference.Coordinator` and, for coordinators
    shaped like the seed framework's, by :class:`coordinator_plugins.reference.SeedCoordinatorAdapter`.
    """

    async def health(self) -> dict[str, Any]:
        """``{"healthy": bool, "components": {name: bool}, "database": bool, "workers": {...}}``."""
        ...

    async def worker_info(self, worker_id: str) -> dict[str, Any] | None:
        """The worker's state, None when unknown. ``restartable: False`` (with
        ``why_not_restartable``) says :meth:`restart_worker` may not act on it (the reference
        coordinator restarts only workers it launched, and replaces only those the operator
        marked replaceable): recovery then leaves it alone. Absent, it is taken as restartable.
        ``process_running`` (optional) says whether the worker's process still runs, for a
        coordinator that can see it: a worker reported lost whose process runs and that
        heartbeats is not lost, and is not restarted."""
        ...

    async def task_info(self, task_id: str) -> dict[str, Any] | None:
        """``{"task_id", "status", "worker_id", "final", ...}``; ``final`` is True once the task
        completed or was failed for good (see :meth:`fail_task`): such a task never runs again."""
        ...

    async def drain_worker(self, worker_id: str) -> bool:
        """Take a worker out of scheduling (no new tasks). False when unknown."""
        ...

    async def undrain_worker(self, worker_id: str) -> bool:
        """Let a drained worker take tasks again. False when unknown."""
        ...

    async def requeue_worker_tasks(self, worker_id: str) -> list[str]:
        """Put the worker's assigned and running tasks back to pending; return their ids."""
        ...

    async def restart_worker(self, worker_id: str, timeout: float = 30.0) -> str | None:
        """Restart the worker's process (or start a replacement) and wait until it is registered
        and heartbeating. Returns the id of the worker now serving (same id, or the replacement),
        None when that did not happen within ``timeout`` or the worker is not restartable."""
        ...

    async def worker_alive(self, worker_id: str) -> bool:
        """Registered, active and heartbeating recently."""
        ...

    async def wait_worker_serving(self, worker_id: str, timeout: float) -> bool:
        """Wait until the worker is alive and has asked for work (or taken a task) since it last
        registered: proof that it serves again, not only that it heartbeats. False on timeout."""
        ...

    async def retry_task(self, task_id: str) -> bool:
        """Send a failed, stuck or timed-out task back to pending for a new attempt, on a worker it
        has not failed on when one is available. False, and nothing changes, for an unknown task
        or a ``final`` one (completed, or failed for good): those never run again."""
        ...

    async def fail_task(self, task_id: str, reason: str) -> bool:
        """Fail a task for good (a poison task), keeping ``reason``: it leaves the queue and never
        runs again, whatever retries, requeues or worker restarts follow. False when unknown or
        already completed."""
        ...

    async def wait_task(self, task_id: str, timeout: float) -> str | None:
        """Wait until the task ends; its final status, or None on timeout."""
        ...

    async def reconnect_database(self) -> bool:
        """Open a new database connection, verify it with a query, and write what was buffered."""
        ...

    def component_names(self) -> list[str]:
        """The internal components (loops) that :meth:`restart_component` can restart."""
        ...

    async def component_healthy(self, name: str) -> bool:
        """Whether that component is running and working (its loop ticks)."""
        ...

    async def restart_component(self, name: str) -> bool:
        """Restart an internal component (``scheduler``, ``heartbeat_monitor``); True only once
        it was seen working again (the restarted loop ticked)."""
        ...

    async def reload_state(self) -> bool:
        """Reconcile in-memory state with the database and repair inconsistencies."""
        ...

    async def pause_scheduling(self) -> None:
        """Stop handing out tasks until :meth:`resume_scheduling` (running tasks go on)."""
        ...

    async def resume_scheduling(self) -> None:
        """Hand out tasks again."""
        ...

    def scheduling_paused(self) -> bool:
        """Whether scheduling is paused now."""
        ...

    async def get_max_concurrency(self) -> int:
        """The most tasks running at once in the farm; 0 = unlimited."""
        ...

    async def set_max_concurrency(self, value: int) -> None:
        """Change that limit (0 = unlimited); tasks running beyond it finish."""
        ...
