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
    completions: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeout", 60.0))

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
        }
