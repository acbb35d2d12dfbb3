"""What the recovery manager keeps per error group, and the ``error_info`` a strategy sees."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from coordinator_plugins.error_handling.model import ErrorReport

HISTORY_LIMIT = 50


@dataclass(slots=True)
class Targets:
    """The workers and tasks a recovery acts on, and the latest occurrence's metadata."""

    workers: list[str]
    tasks: list[str]
    metadata: Any
    had_tasks: bool = False

    @classmethod
    def peek(cls, report: ErrorReport) -> Targets:
        """What the group's next recovery would act on, left in place."""
        return cls(report.target_workers, report.target_tasks, report.latest_metadata)

    @classmethod
    def take(cls, report: ErrorReport) -> Targets:
        workers, tasks, metadata = report.take_targets()
        return cls(workers, tasks, metadata, had_tasks=bool(tasks))


@dataclass
class LevelState:
    level: int = 1
    last_updated: float = field(default_factory=time.time)
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY_LIMIT))
    recoveries: int = 0
    failures: int = 0  # consecutive failed recoveries
    cooldown_until: float = 0.0  # monotonic time before which no automatic recovery starts
    unheld: deque[float] = field(default_factory=deque)  # when recoveries did not hold (monotonic)
    stopped: str | None = None  # why recovery stopped, until the group is resolved or reset

    def did_not_hold(self, window: float, now: float | None = None) -> int:
        """Count one more recovery that did not hold; how many did within ``window`` seconds."""
        now = time.monotonic() if now is None else now
        self.unheld.append(now)
        while self.unheld and now - self.unheld[0] >= window:
            self.unheld.popleft()
        return len(self.unheld)

    def restart(self) -> None:
        """Level 1, no cooldown, nothing counted: as a reset or a resolution leaves it."""
        self.level = 1
        self.stopped = None
        self.unheld.clear()
        self.failures = 0
        self.cooldown_until = 0.0


def strategy_info(report: ErrorReport, level: int, timeout: float, targets: Targets) -> dict[str, Any]:
    """The ``error_info`` a strategy runs on."""
    c = report.context
    workers, tasks, metadata = targets.workers, targets.tasks, targets.metadata
    info: dict[str, Any] = {
        "error_id": report.error_id,
        "error_type": report.error_type.value,
        "category": report.category.value,
        "severity": report.error_severity.value,
        "message": report.message,
        "component": c.component,
        "operation": c.operation,
        "hardware_id": c.hardware_id,
        # every worker and task that the group's occurrences named since its last recovery
        "worker_ids": list(workers),
        "task_ids": list(tasks),
        "worker_id": workers[-1] if workers else None,
        "task_id": tasks[-1] if tasks else None,
        # per task, the worker of each occurrence that named it: does the error follow the task?
        "task_failures": {t: list(report.task_failures.get(t) or []) for t in tasks},
        "metadata": dict(metadata if metadata is not None else c.metadata),
        "level": level,
        "timeout": timeout,
        "exception": report.exception,
        "aggregated_count": report.aggregated_count,
    }
    op = report.recovery_details.get("_operation")
    if op:
        info.update(callable=op[0], args=op[1], kwargs=op[2])
    return info
