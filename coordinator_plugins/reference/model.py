"""The reference coordinator's object model: workers and tasks."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

WORKER_STATES = ("active", "draining", "lost", "stopped")
TASK_STATES = ("pending", "assigned", "running", "completed", "failed")
FINAL_TASK_STATES = ("completed", "failed")


@dataclass(eq=False)
class Worker:
    worker_id: str
    pid: int | None = None
    max_tasks: int = 1
    capabilities: dict[str, Any] = field(default_factory=dict)
    status: str = "active"
    draining: bool = False
    registered_at: float = field(default_factory=time.time)
    last_heartbeat: float = field(default_factory=time.monotonic)
    incarnation: int = 1
    polls: int = 0  # requests for work by this incarnation: one that polls serves, not only heartbeats
    tasks: set[str] = field(default_factory=set)
    inbox: deque[str] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def schedulable(self) -> bool:
        return self.status == "active" and not self.draining and len(self.tasks) < self.max_tasks

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "pid": self.pid,
            "status": self.status,
            "draining": self.draining,
            "max_tasks": self.max_tasks,
            "tasks": sorted(self.tasks),
            "incarnation": self.incarnation,
            "seconds_since_heartbeat": round(time.monotonic() - self.last_heartbeat, 3),
            "capabilities": self.capabilities,
        }


@dataclass(eq=False)
class Task:
    task_id: str
    spec: dict[str, Any]
    status: str = "pending"
    worker_id: str | None = None
    attempt: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    queued_at: float = field(default_factory=time.monotonic)  # when it last became pending
    completions: int = 0
    failed_on: list[str] = field(default_factory=list)  # the worker of each attempt that failed
    failure_reason: str | None = None  # set when the task was failed for good (a poison task)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeout", 60.0))

    @property
    def final(self) -> bool:
        """Completed, or failed for good: nothing runs it again."""
        return self.status == "completed" or self.failure_reason is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "spec": self.spec,
            "status": self.status,
            "worker_id": self.worker_id,
            "attempt": self.attempt,
            "result": self.result,
            "error": self.error,
            "completions": self.completions,
            "final": self.final,
            "failed_on": list(self.failed_on),
            "failure_reason": self.failure_reason,
        }
