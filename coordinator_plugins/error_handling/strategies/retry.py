"""The built-in ``retry`` strategy (LOW): the failed operation or the failed tasks, run again."""

from __future__ import annotations

import inspect
from typing import Any

from coordinator_plugins.contract.protocol import CoordinatorProtocol
from coordinator_plugins.error_handling.model import ErrorCategory
from coordinator_plugins.error_handling.strategies.base import NotApplicable, RecoveryLevel
from coordinator_plugins.error_handling.strategies.builtin import (
    DETERMINISTIC_CATEGORIES,
    BuiltinStrategy,
    deadline_of,
    has_methods,
    open_tasks,
    rerun,
    targets_of,
)


class RetryStrategy(BuiltinStrategy):
    """LOW: re-run the failed operation (``callable`` in the context) or re-submit the failed tasks
    (never one that completed or was failed for good), and succeed only when the re-runs did."""

    strategy_id = "retry"
    # Anything a re-run may fix; never what fails the same way every time it runs.
    categories = frozenset(c.value for c in ErrorCategory) - DETERMINISTIC_CATEGORIES
    applicable_reads = frozenset({"callable", "task_ids", "task_id"})
    applicable_pure = True  # the coordinator's methods are looked up, never called

    def __init__(self, coordinator: CoordinatorProtocol | None) -> None:
        super().__init__(coordinator, "Retry", RecoveryLevel.LOW)

    def is_applicable(self, error_info: dict[str, Any]) -> bool:
        if callable(error_info.get("callable")):
            return True
        return bool(targets_of(error_info, "task_ids", "task_id")) and has_methods(
            self.coordinator, "retry_task", "wait_task", "task_info")

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        fn = error_info.get("callable")
        if callable(fn):
            result = fn(*(error_info.get("args") or ()), **(error_info.get("kwargs") or {}))
            if inspect.isawaitable(result):
                result = await result
            error_info["details"]["result"] = repr(result)[:200]
            return True
        c = self._c()
        tasks = await open_tasks(c, targets_of(error_info, "task_ids", "task_id"))
        if not tasks:
            raise NotApplicable("no failed task left to re-run")
        return await rerun(c, tasks, error_info, deadline_of(error_info))
