"""Successes on probation (SPEC section 9): a recovery's success is provisional for
``verify_window`` seconds. A new occurrence of the group within it that concerns what the run
acted on (one of its workers or tasks; any occurrence when either names none) makes the run a
failure; otherwise it held. Either way the manager is told once, and learns then."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coordinator_plugins.error_handling.learning.learn import HeldRun


@dataclass(eq=False)
class Provisional:
    """One successful run waiting for its verify window."""

    error_id: str
    level: int
    key: str
    run: HeldRun
    workers: frozenset[str]
    tasks: frozenset[str]
    entry: dict[str, Any] = field(default_factory=dict)  # the recovery's history entry
    report: Any = None  # the group (an ErrorReport)
    handle: asyncio.TimerHandle | None = None
    counted: tuple[str, ...] = ()  # the targets its recovery counted against (restart intensity)
    # the lowest level above ``level`` with an applicable strategy when it ran (None: there was none)
    next_level: int | None = None

    def concerns(self, worker_id: str | None, task_id: str | None) -> bool:
        """Is an occurrence naming ``worker_id`` / ``task_id`` a recurrence of what this run fixed?
        Another worker's loss in the same group is a new incident, not a recurrence."""
        if not (self.workers or self.tasks) or not (worker_id or task_id):
            return True
        return (worker_id is not None and worker_id in self.workers) or (task_id is not None and task_id in self.tasks)


class Probation:
    """Provisional successes by group, each ended once: held at the end of its window, or
    recurred by an occurrence that concerns it."""

    def __init__(self, window: float, on_end: Callable[[Provisional, bool], None]) -> None:
        self.window = window
        self.on_end = on_end
        self.pending: dict[str, list[Provisional]] = {}
        self.held = 0
        self.recurred = 0

    def __len__(self) -> int:
        return sum(len(v) for v in self.pending.values())

    def hold(self, p: Provisional) -> None:
        self.pending.setdefault(p.error_id, []).append(p)
        p.handle = asyncio.get_running_loop().call_later(self.window, self._end, p, True)

    def observe(self, error_id: str, worker_id: Any, task_id: Any) -> bool:
        """An occurrence of the group: end every provisional success it refutes. Cheap when the
        group has none (one dict lookup)."""
        runs = self.pending.get(error_id)
        if not runs:
            return False
        w = str(worker_id) if worker_id is not None else None
        t = str(task_id) if task_id is not None else None
        hit = [p for p in runs if p.concerns(w, t)]
        for p in hit:
            self._end(p, False)
        return bool(hit)

    def _end(self, p: Provisional, held: bool) -> None:
        runs = self.pending.get(p.error_id)
        if not runs or p not in runs:
            return
        runs.remove(p)
        if not runs:
            del self.pending[p.error_id]
        if p.handle is not None:
            p.handle.cancel()
        if held:
            self.held += 1
        else:
            self.recurred += 1
        self.on_end(p, held)

    def close(self) -> None:
        """Stop the clocks: what is still on probation was never verified, so nothing is learned."""
        for runs in self.pending.values():
            for p in runs:
                if p.handle is not None:
                    p.handle.cancel()
        self.pending.clear()
