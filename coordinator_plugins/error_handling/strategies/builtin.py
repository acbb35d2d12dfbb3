"""What the five built-in strategies share. Each acts through the coordinator contract
(:class:`~coordinator_plugins.contract.CoordinatorProtocol`), declares the error categories it can
act on, and succeeds only once it verified that the symptom that started the recovery is gone.
One module per strategy: :mod:`.retry`, :mod:`.worker`, :mod:`.database`, :mod:`.coordinator`,
:mod:`.system`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from coordinator_plugins.contract.protocol import CoordinatorProtocol
from coordinator_plugins.error_handling.strategies.base import NotApplicable, RecoveryStrategy

WORKER_CATEGORIES = frozenset({"worker_offline", "worker_crash", "worker_hang", "worker_resource"})
# A failing test is a result; invalid input, configuration, credentials and missing modules fail
# the same way on every run: no infrastructure recovery acts on them.
DETERMINISTIC_CATEGORIES = frozenset(
    {"test_failure", "validation", "configuration", "auth_error", "unauthorized", "dependency"}
)


def deadline_of(info: dict[str, Any], default: float = 30.0) -> float:
    return time.monotonic() + float(info.get("timeout") or default)


def remaining(deadline: float) -> float:
    return max(0.05, deadline - time.monotonic())


def has_methods(coordinator: Any, *names: str) -> bool:
    return coordinator is not None and all(callable(getattr(coordinator, n, None)) for n in names)


def targets_of(error_info: dict[str, Any], many: str, one: str) -> list[str]:
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


async def open_tasks(c: CoordinatorProtocol, task_ids: list[str]) -> list[str]:
    """The tasks that may run again: known, and neither completed nor failed for good."""
    out = []
    for tid in task_ids:
        t = await c.task_info(tid)
        if t is not None and not t.get("final") and t.get("status") != "completed":
            out.append(tid)
    return out


async def rerun(c: CoordinatorProtocol, tasks: list[str], error_info: dict[str, Any], deadline: float) -> bool:
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
    statuses = await asyncio.gather(*(c.wait_task(tid, remaining(deadline)) for tid in queued))
    error_info["details"]["task_status"] = dict(zip(queued, statuses, strict=True))
    error_info["recovered_tasks"].extend(t for t, s in zip(queued, statuses, strict=True) if s == "completed")
    return all(s == "completed" for s in statuses)
