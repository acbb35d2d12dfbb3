"""Poison tasks (SPEC section 9): a task that fails the same way on every attempt is the task's
own problem, not the farm's, and no infrastructure recovery is spent on it again.

"The same way" is one error group: one fingerprint. ``ErrorReport.task_failures`` keeps, for
each task the group's occurrences named, the worker of each occurrence. A task is poison once it
failed ``POISON_ATTEMPTS`` times in the group on at least two different workers, or on every
worker when the farm has fewer: then it is failed for good through the coordinator, with the
reason, like a message a queue dead-letters after N deliveries or a Kubernetes Job past its
``backoffLimit``. The reference coordinator places a retried task on a worker it has not failed
on, so that takes at most three attempts."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from coordinator_plugins.error_handling.model import ErrorReport
from coordinator_plugins.error_handling.strategies.base import TASK_CATEGORIES

logger = logging.getLogger(__name__)

POISON_ATTEMPTS = 3


def fails_its_tasks(category: str) -> bool:
    """Whether a group of ``category`` is its tasks failing: a task's own failure, and any error
    a task's run reported (a database, network or setup error: "fixture db missing" is
    ``db_query``), but not a worker's loss or the machine's overload, which only happened to
    a task."""
    return category in TASK_CATEGORIES or not category.startswith(("worker_", "system_"))


def poison_reason(failed_on: Sequence[str | None], workers: int) -> str | None:
    """Why a task that failed on ``failed_on`` (one worker id per attempt, None when unnamed) is
    poison in a farm of ``workers`` active workers; None while it is not."""
    if len(failed_on) < POISON_ATTEMPTS:
        return None
    named = sorted({w for w in failed_on if w})
    if named and len(named) < min(2, max(1, workers)):
        return None  # every failure on one worker while others exist: that worker may be at fault
    where = f"on worker(s) {', '.join(named)}" if named else "(no worker named)"
    return f"failed the same way on {len(failed_on)} attempts {where}: the task's own problem, not the farm's"


async def _active_workers(coordinator: Any) -> int:
    with contextlib.suppress(Exception):
        health = await coordinator.health()
        return int((health.get("workers") or {}).get("active", 2))
    return 2


async def screen(coordinator: Any, report: ErrorReport, tasks: list[str]) -> tuple[list[str], list[str]]:
    """Split a recovery's target tasks: (those still to act on, verdicts on those failed for good
    now). Tasks that completed or were failed for good earlier are dropped: nothing runs them
    again."""
    if coordinator is None or not tasks or not callable(getattr(coordinator, "task_info", None)):
        return tasks, []
    kept: list[str] = []
    verdicts: list[str] = []
    workers: int | None = None
    taskish = fails_its_tasks(report.category.value)
    for tid in tasks:
        info = await coordinator.task_info(tid)
        if info is not None and (info.get("final") or info.get("status") == "completed"):
            continue
        failed_on = report.task_failures.get(tid) or []
        if taskish and info is not None and len(failed_on) >= POISON_ATTEMPTS:
            if workers is None:
                workers = await _active_workers(coordinator)
            reason = poison_reason(failed_on, workers)
            if reason is not None and callable(getattr(coordinator, "fail_task", None)):
                if await coordinator.fail_task(tid, reason):
                    logger.warning("task %s is a poison task: %s", tid, reason)
                    verdicts.append(f"task {tid} {reason}")
                    continue
        kept.append(tid)
    return kept, verdicts
