"""``ReplaceWorkerStrategy`` (MEDIUM, opt-in): a worker at fault retired and replaced by a new
process under a new id. Where a plain restart keeps the worker's local state (and so whatever
wedged it), a replacement starts clean; it costs the worker's identity (its local caches, its
place in dashboards and logs).

Not a built-in: register it with ``strategies = {replace =
"coordinator_plugins.error_handling.strategies.replace:ReplaceWorkerStrategy"}``. It needs the
coordinator to offer ``replace_worker(worker_id, timeout)`` (the reference coordinator does, for
the workers it launched); without it the strategy is not applicable."""

from __future__ import annotations

import asyncio
from typing import Any

from coordinator_plugins.contract.protocol import CoordinatorProtocol
from coordinator_plugins.error_handling.strategies.base import NotApplicable, RecoveryLevel
from coordinator_plugins.error_handling.strategies.builtin import (
    WORKER_CATEGORIES,
    BuiltinStrategy,
    deadline_of,
    has_methods,
    remaining,
    targets_of,
)


class ReplaceWorkerStrategy(BuiltinStrategy):
    """MEDIUM: for each worker the error names: drain it, requeue its tasks, retire it and start a
    replacement, and succeed only when every replacement heartbeats and asks for work."""

    strategy_id = "replace"
    categories = WORKER_CATEGORIES
    applicable_reads = frozenset({"worker_ids", "worker_id"})
    applicable_pure = True

    def __init__(self, coordinator: CoordinatorProtocol | None) -> None:
        super().__init__(coordinator, "Worker replacement", RecoveryLevel.MEDIUM)

    def is_applicable(self, error_info: dict[str, Any]) -> bool:
        return bool(targets_of(error_info, "worker_ids", "worker_id")) and has_methods(
            self.coordinator, "worker_info", "drain_worker", "requeue_worker_tasks", "replace_worker",
            "wait_worker_serving")

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        c: Any = self._c()
        workers = []
        for w in targets_of(error_info, "worker_ids", "worker_id"):
            info = await c.worker_info(w)
            if info is not None and info.get("status") != "stopped":
                workers.append(w)
        if not workers:
            raise NotApplicable("no known worker to replace (retired already, or never seen)")
        deadline = deadline_of(error_info)
        results = await asyncio.gather(*(self._replace_one(c, w, error_info, deadline) for w in workers))
        error_info["details"]["replaced_by"] = dict(zip(workers, results, strict=True))
        return all(r is not None for r in results)

    @staticmethod
    async def _replace_one(c: Any, wid: str, error_info: dict[str, Any], deadline: float) -> str | None:
        await c.drain_worker(wid)
        moved = await c.requeue_worker_tasks(wid)
        error_info["affected_tasks"].extend(moved)
        new = await c.replace_worker(wid, timeout=remaining(deadline))
        if new is None or not await c.wait_worker_serving(new, remaining(deadline)):
            return None
        error_info["recovered_tasks"].extend(moved)
        return str(new)
