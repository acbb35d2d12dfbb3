"""Recovery budget: at most N recovery actions (level 3+, and restarts at any level) per sliding
window, per component and overall, the way Erlang/OTP supervisors bound restart intensity per period."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class RecoveryBudget:
    def __init__(
        self, limit: int, window: float, global_limit: int = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.global_limit = global_limit
        self.clock = clock
        self._per: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()
        self.granted = 0
        self.refused = 0

    def _trim(self, q: deque[float], now: float) -> None:
        while q and now - q[0] >= self.window:
            q.popleft()

    def try_acquire(self, component: str) -> bool:
        """Spend one action for ``component``; False (and nothing spent) when over budget."""
        if self.limit == 0 and self.global_limit == 0:
            self.granted += 1
            return True
        now = self.clock()
        q = self._per.setdefault(component, deque())
        self._trim(q, now)
        self._trim(self._all, now)
        if (self.limit and len(q) >= self.limit) or (self.global_limit and len(self._all) >= self.global_limit):
            self.refused += 1
            return False
        q.append(now)
        self._all.append(now)
        self.granted += 1
        return True

    async def acquire(self, component: str) -> bool:
        """:meth:`try_acquire`, as the recovery manager calls it (a fleet's budget asks the database)."""
        return self.try_acquire(component)

    def refund(self, component: str) -> None:
        """Give back the latest grant of ``component`` (the action turned out not to apply)."""
        q = self._per.get(component)
        if q:
            stamp = q.pop()
            try:
                self._all.remove(stamp)
            except ValueError:
                pass
            self.granted -= 1

    def retry_after(self, component: str) -> float:
        """Seconds until ``component`` may spend again (0 when it may now)."""
        now = self.clock()
        waits = [0.0]
        q = self._per.get(component)
        if self.limit and q:
            self._trim(q, now)
            if len(q) >= self.limit:
                waits.append(q[0] + self.window - now)
        if self.global_limit:
            self._trim(self._all, now)
            if len(self._all) >= self.global_limit:
                waits.append(self._all[0] + self.window - now)
        return max(waits)

    def status(self) -> dict[str, Any]:
        now = self.clock()
        per = {}
        for comp, q in list(self._per.items()):
            self._trim(q, now)
            if q:
                per[comp] = {
                    "used": len(q),
                    "limit": self.limit,
                    "exhausted": bool(self.limit and len(q) >= self.limit),
                }
            else:
                del self._per[comp]
        self._trim(self._all, now)
        return {
            "limit": self.limit,
            "global_limit": self.global_limit,
            "window": self.window,
            "used_total": len(self._all),
            "components": per,
            "granted": self.granted,
            "refused": self.refused,
            "exhausted": [c for c, v in per.items() if v["exhausted"]],
        }


class BudgetLedger(Protocol):
    """Budget grants shared by a fleet (the PostgreSQL store has them)."""

    async def budget_acquire(
        self, component: str, window: float, limit: int, global_limit: int
    ) -> tuple[int | None, float]: ...
    async def budget_refund(self, action_id: int) -> None: ...


class FleetBudget(RecoveryBudget):
    """``recovery_budget`` and ``recovery_budget_global`` counted across the fleet (SPEC 10):
    each grant is a row every member counts, decided in the database one at a time. When the
    database cannot answer, this member falls back to its own count (never to no limit)."""

    def __init__(self, ledger: BudgetLedger, limit: int, window: float, global_limit: int = 0) -> None:
        super().__init__(limit, window, global_limit)
        self.ledger = ledger
        self._actions: dict[str, list[int]] = {}
        self._waits: dict[str, float] = {}
        self._refunds: set[asyncio.Task[None]] = set()
        self.fleet_refused = 0
        self.ledger_failures = 0

    async def acquire(self, component: str) -> bool:
        if self.limit == 0 and self.global_limit == 0:
            self.granted += 1
            return True
        try:
            action, wait = await self.ledger.budget_acquire(component, self.window, self.limit, self.global_limit)
        except Exception as exc:
            self.ledger_failures += 1
            logger.warning("fleet budget unavailable (%s); counting this member's actions only", exc)
            return self.try_acquire(component)
        if action is None:
            self.refused += 1
            self.fleet_refused += 1
            self._waits[component] = wait
            return False
        self._actions.setdefault(component, []).append(action)
        now = self.clock()
        self._per.setdefault(component, deque()).append(now)
        self._all.append(now)
        self.granted += 1
        return True

    def refund(self, component: str) -> None:
        actions = self._actions.get(component)
        if actions:
            task = asyncio.ensure_future(self.ledger.budget_refund(actions.pop()))
            self._refunds.add(task)
            task.add_done_callback(self._refunds.discard)
        super().refund(component)

    def retry_after(self, component: str) -> float:
        wait = self._waits.pop(component, None)
        return wait if wait is not None else super().retry_after(component)

    def status(self) -> dict[str, Any]:
        out = super().status()
        out.update(shared="fleet", fleet_refused=self.fleet_refused, ledger_failures=self.ledger_failures)
        return out
