"""What the recovery manager keeps per error group, and the ``error_info`` a strategy sees."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
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
    counted: tuple[str, ...] = ()  # what restart intensity counts this recovery against (see keys)

    @classmethod
    def peek(cls, report: ErrorReport) -> Targets:
        """What the group's next recovery would act on, left in place."""
        return cls(report.target_workers, report.target_tasks, report.latest_metadata)

    def keys(self, component: str | None) -> list[str]:
        """What restart intensity is counted per: the workers acted on, else the tasks, else the
        component (SPEC 9)."""
        if self.workers:
            return [f"worker:{w}" for w in dict.fromkeys(self.workers)]
        if self.tasks:
            return [f"task:{t}" for t in dict.fromkeys(self.tasks)]
        return [f"component:{component or ''}"]

    @classmethod
    def take(cls, report: ErrorReport) -> Targets:
        workers, tasks, metadata = report.take_targets()
        targets = cls(workers, tasks, metadata, had_tasks=bool(tasks))
        targets.counted = tuple(targets.keys(report.context.component))
        return targets


class LevelState:
    """A group's recovery level, history, cooldown and stop. ``level`` and ``stopped`` tell the
    :class:`LevelMap` holding the state when they change, so that the groups above level 1 and
    the stopped ones are known without walking every group."""

    __slots__ = ("_level", "_stopped", "_watch", "cooldown_until", "error_id", "failures", "history",
                 "last_updated", "recoveries", "rewind", "unheld")

    def __init__(
        self,
        level: int = 1,
        last_updated: float | None = None,
        history: deque[dict[str, Any]] | None = None,
        recoveries: int = 0,
        failures: int = 0,
        cooldown_until: float = 0.0,
        unheld: dict[str, deque[float]] | None = None,
        stopped: str | None = None,
    ) -> None:
        self._watch: LevelMap | None = None
        self.error_id = ""
        self._level = level
        self._stopped = stopped
        self.last_updated = time.time() if last_updated is None else last_updated
        self.history: deque[dict[str, Any]] = history if history is not None else deque(maxlen=HISTORY_LIMIT)
        self.recoveries = recoveries
        self.failures = failures  # consecutive failed recoveries
        self.cooldown_until = cooldown_until  # monotonic time before which no automatic recovery starts
        # target (worker, else task, else component) -> when each recovery of it ran, held or not
        self.unheld: dict[str, deque[float]] = unheld if unheld is not None else {}
        # every level with an applicable strategy was tried and did not hold: the next recovery
        # (after the cooldown) starts again from the lowest level with one; ``level`` keeps the
        # highest level at which a strategy ran, for the operator
        self.rewind = False

    @property
    def level(self) -> int:
        return self._level

    @level.setter
    def level(self, value: int) -> None:
        self._level = value
        if self._watch is not None:
            self._watch.note(self)

    @property
    def stopped(self) -> str | None:
        """Why recovery stopped, until the group is resolved or reset."""
        return self._stopped

    @stopped.setter
    def stopped(self, value: str | None) -> None:
        self._stopped = value
        if self._watch is not None:
            self._watch.note(self)

    def within(self, targets: list[str], window: float, now: float | None = None) -> int:
        """The most recoveries any of ``targets`` had within ``window`` seconds (SPEC 9: restart
        intensity per target, whether or not each one held)."""
        now = time.monotonic() if now is None else now
        most = 0
        for target in targets:
            q = self.unheld.get(target)
            if q is None:
                continue
            while q and now - q[0] >= window:
                q.popleft()
            if not q:
                del self.unheld[target]
            most = max(most, len(q) if q else 0)
        return most

    def count_recovery(self, targets: list[str], window: float, now: float | None = None) -> int:
        """Count one more recovery of each of ``targets``; the most any of them had within ``window``."""
        now = time.monotonic() if now is None else now
        for target in targets:
            self.unheld.setdefault(target, deque()).append(now)
        return self.within(targets, window, now)

    def restart(self) -> None:
        """Level 1, no cooldown, nothing counted: as a reset or a resolution leaves it."""
        self.level = 1
        self.stopped = None
        self.unheld.clear()
        self.failures = 0
        self.cooldown_until = 0.0
        self.rewind = False


class LevelMap(dict[str, LevelState]):
    """error id -> LevelState, which also knows the groups above level 1 (``active``) and the
    stopped ones (``stopped``), updated as states change."""

    def __init__(self) -> None:
        super().__init__()
        self.active: dict[str, int] = {}
        self.stopped: dict[str, str] = {}

    def __setitem__(self, error_id: str, st: LevelState) -> None:
        old = self.get(error_id)
        if old is not None and old is not st:
            old._watch = None
        st._watch, st.error_id = self, error_id
        super().__setitem__(error_id, st)
        self.note(st)

    def __delitem__(self, error_id: str) -> None:
        st = self[error_id]
        super().__delitem__(error_id)
        st._watch = None
        self.active.pop(error_id, None)
        self.stopped.pop(error_id, None)

    def note(self, st: LevelState) -> None:
        e = st.error_id
        if st._level > 1:
            self.active[e] = st._level
        else:
            self.active.pop(e, None)
        if st._stopped:
            self.stopped[e] = st._stopped
        else:
            self.stopped.pop(e, None)


def strategy_info(
    report: ErrorReport, level: int, timeout: float, targets: Targets, keys: frozenset[str] | None = None
) -> dict[str, Any]:
    """The ``error_info`` a strategy runs on; with ``keys``, only those of its keys (the same
    values): what a check that reads no others is given."""
    if keys is not None:
        part = {k: _FIELDS[k](report, targets) for k in keys if k in _FIELDS}
        if "level" in keys:
            part["level"] = level
        if "timeout" in keys:
            part["timeout"] = timeout
        op = None if keys.isdisjoint(_OPERATION) else report.recovery_details.get("_operation")
        if op:
            part.update((k, v) for k, v in zip(_OPERATION_KEYS, op, strict=True) if k in keys)
        return part
    info = {k: f(report, targets) for k, f in _FIELDS.items()}
    info["level"] = level
    info["timeout"] = timeout
    op = report.recovery_details.get("_operation")
    if op:
        info.update(zip(_OPERATION_KEYS, op, strict=True))
    return info


# One getter per key of error_info (level, timeout and the operation's keys aside). Enum members
# are read by ``_value_``: ``.value`` is a property, two Python calls, and this runs per report.
_FIELDS: dict[str, Callable[[ErrorReport, Targets], Any]] = {
    "error_id": lambda r, t: r.error_id,
    "error_type": lambda r, t: r.error_type._value_,
    "category": lambda r, t: r.category._value_,
    "severity": lambda r, t: r.error_severity._value_,
    "message": lambda r, t: r.message,
    "component": lambda r, t: r.context.component,
    "operation": lambda r, t: r.context.operation,
    "hardware_id": lambda r, t: r.context.hardware_id,
    # every worker and task that the group's occurrences named since its last recovery
    "worker_ids": lambda r, t: list(t.workers),
    "task_ids": lambda r, t: list(t.tasks),
    "worker_id": lambda r, t: t.workers[-1] if t.workers else None,
    "task_id": lambda r, t: t.tasks[-1] if t.tasks else None,
    # per task, the worker of each occurrence that named it: does the error follow the task?
    "task_failures": lambda r, t: {k: list(r.task_failures.get(k) or []) for k in t.tasks},
    "metadata": lambda r, t: dict(t.metadata if t.metadata is not None else r.context.metadata),
    "exception": lambda r, t: r.exception,
    "aggregated_count": lambda r, t: r.aggregated_count,
}
_OPERATION_KEYS = ("callable", "args", "kwargs")  # present when the report carries an operation
_OPERATION = frozenset(_OPERATION_KEYS)
