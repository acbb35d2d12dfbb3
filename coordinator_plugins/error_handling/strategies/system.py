"""The built-in ``system`` strategy (CRITICAL): load shed while the machine is overloaded."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from coordinator_plugins.contract.protocol import CoordinatorProtocol
from coordinator_plugins.error_handling.strategies.base import NotApplicable, RecoveryLevel
from coordinator_plugins.error_handling.strategies.builtin import BuiltinStrategy, deadline_of, has_methods, remaining


class SystemRecoveryStrategy(BuiltinStrategy):
    """CRITICAL: shed load while the machine is overloaded, and restore every setting it changed,
    in a ``finally``, also on timeout or cancellation.

    Shedding halves the concurrency limit and pauses scheduling for at most ``max_pause``
    seconds, then lets the farm run at the halved limit until the overload is gone for
    ``settle`` seconds (success), or gives up (failure) when it is still there ``patience``
    seconds later, since shedding is not what relieves it, or at the deadline. It never holds the
    farm paused for the whole run: an overload the farm did not cause (another process on the
    host) would otherwise stop every task for as long as it lasts, which the 10-minute soak on a
    busy machine showed (the learned timeout grew to 100 s and the farm ran ~5% of its tasks)."""

    strategy_id = "system"
    categories = frozenset({"system_overload", "system_resource", "task_resource", "worker_resource"})
    applicable_reads = frozenset({"category"})
    applicable_pure = True  # the coordinator's methods are looked up, never called
    CPU_LIMIT = 90.0
    MEMORY_LIMIT = 90.0

    def __init__(
        self,
        coordinator: CoordinatorProtocol | None,
        sampler: Any = None,
        settle: float = 1.0,
        max_pause: float = 2.0,
        patience: float = 10.0,
    ) -> None:
        super().__init__(coordinator, "System load shedding", RecoveryLevel.CRITICAL)
        self.sampler = sampler
        self.settle = settle
        self.max_pause = max_pause
        self.patience = patience
        self._holders = 0  # runs currently shedding load
        self._saved: tuple[bool, int] | None = None  # the settings before the first of them
        self._paused_at: float | None = None  # when shedding paused scheduling, until it resumes

    def is_applicable(self, error_info: dict[str, Any]) -> bool:
        category = str(error_info.get("category") or "")
        return category in self.categories and has_methods(
            self.coordinator, "pause_scheduling", "resume_scheduling", "get_max_concurrency", "set_max_concurrency"
        )

    def overloaded(self) -> bool:
        if self.sampler is None:
            return False
        snap = self.sampler.latest()
        return snap.get("cpu_percent", 0.0) > self.CPU_LIMIT or snap.get("memory_percent", 0.0) > self.MEMORY_LIMIT

    async def _shed(self, error_info: dict[str, Any]) -> None:
        """Enter load shedding. Runs for several groups may overlap: the first saves the settings
        as they were and sheds, the last one out restores them (see :meth:`_restore`)."""
        c = self._c()
        self._holders += 1
        if self._holders > 1:
            error_info["details"]["shed"] = {"joined": True}
            return
        was_paused = c.scheduling_paused()
        old_limit = await c.get_max_concurrency()
        self._saved = (was_paused, old_limit)
        running = 0
        if has_methods(c, "health"):
            counts = (await c.health()).get("tasks", {})
            running = sum(int(counts.get(s, 0)) for s in ("assigned", "running"))
        new_limit = max(1, (old_limit or running or 2) // 2)
        await c.set_max_concurrency(new_limit)
        if not was_paused:
            await c.pause_scheduling()
            self._paused_at = time.monotonic()
        error_info["details"]["shed"] = {"paused": not was_paused, "max_concurrency": new_limit, "was": old_limit}

    async def _throttle(self, error_info: dict[str, Any]) -> None:
        """After ``max_pause``, scheduling resumes at the reduced limit."""
        if self._paused_at is not None and time.monotonic() - self._paused_at >= self.max_pause:
            self._paused_at = None
            await self._c().resume_scheduling()
            error_info["details"]["resumed_throttled"] = True

    async def _restore(self) -> None:
        self._holders -= 1
        if self._holders > 0 or self._saved is None:
            return
        (was_paused, old_limit), self._saved = self._saved, None
        self._paused_at = None
        c = self._c()
        await c.set_max_concurrency(old_limit)
        if not was_paused:
            await c.resume_scheduling()

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        c = self._c()
        if not self.overloaded():  # the symptom is not there (or cannot be seen): nothing to shed
            raise NotApplicable("the machine is not overloaded now")
        deadline = deadline_of(error_info)
        try:
            await self._shed(error_info)
            deadline = min(deadline, time.monotonic() + self.patience)
            quiet_since: float | None = None
            while time.monotonic() < deadline:
                if self.overloaded():
                    quiet_since = None
                else:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since >= self.settle:
                        break
                await self._throttle(error_info)
                await asyncio.sleep(min(0.2, remaining(deadline)))
            else:
                return False
        finally:  # also on timeout or cancellation
            await self._restore()
        health = await c.health() if has_methods(c, "health") else {"healthy": True}
        return not self.overloaded() and bool(health.get("healthy", True))
