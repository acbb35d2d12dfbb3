"""Diagnostics: the plugin's health (``GET /diagnostics``, ``run_diagnostics``), answered from
what the parts hold in memory, but for what needs another thread or the database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from coordinator_plugins.error_handling.fleet.member import Fleet, live_members
from coordinator_plugins.error_handling.intake.handler import ErrorHandler
from coordinator_plugins.error_handling.learning.learn import Readings
from coordinator_plugins.error_handling.learning.policy import SelectionPolicy
from coordinator_plugins.error_handling.learning.timeouts import AdaptiveTimeouts
from coordinator_plugins.error_handling.recovery.budget import RecoveryBudget
from coordinator_plugins.error_handling.recovery.manager import RecoveryManager
from coordinator_plugins.error_handling.storage.base import Store

# A commit the store made within this long (s) proves it answers: no ping is needed.
COMMIT_PROOF = 1.0


async def _coordinator_health(actions: Any) -> Any:
    """The coordinator's health, or the exception its check raised."""
    try:
        return await actions.health()
    except Exception as exc:
        return exc


class Diagnostics:
    def __init__(
        self,
        store: Store,
        handler: ErrorHandler,
        recovery: RecoveryManager,
        budget: RecoveryBudget,
        policy: SelectionPolicy,
        timeouts: AdaptiveTimeouts,
        sampler: Readings,
        actions: Any,
        fleet: Fleet | None,
        coordinator_id: str,
    ) -> None:
        self.store = store
        self.handler = handler
        self.recovery = recovery
        self.budget = budget
        self.policy = policy
        self.timeouts = timeouts
        self.sampler = sampler
        self.actions = actions
        self.fleet = fleet
        self.coordinator_id = coordinator_id
        # the store's commit count when diagnostics last saw it, when that was, and when it last
        # saw that count grow (the time of the check before: a lower bound of the latest commit's)
        self._commits: tuple[int, float, float] = (-1, 0.0, float("-inf"))

    async def members(self) -> list[dict[str, Any]]:
        """The live coordinators sharing this database, this one first (just this one on DuckDB)."""
        return await live_members(self.fleet, self.coordinator_id)

    def _committed_lately(self, commits: int) -> bool:
        """Whether the store committed within the last COMMIT_PROOF seconds, as far as the commit
        counts seen by successive diagnostics tell (False the first time, and when idle)."""
        now = time.monotonic()
        count, seen, grew = self._commits
        if commits > count >= 0:
            grew = seen  # the commits that made the difference came after that check
        self._commits = (commits, now, grew)
        return now - grew <= COMMIT_PROOF

    async def run(self, restore_skipped: int = 0) -> dict[str, Any]:
        """The plugin's health, answered from what is in memory but for what needs another thread
        or the database: the coordinator's health, the fleet's members (with a fleet) and a ping
        of the store unless it just committed. During a storm every such wait costs turns of a
        loop busy with hundreds of connections (and a ping waits behind a commit in the
        database): one wait is awaited as it is, several side by side; nothing is wrapped in a
        task that would cost a turn of its own. ``restore_skipped``: stored rows the last start
        could not restore."""
        issues: list[str] = []
        status = "healthy"
        store = self.store.status().to_dict()
        waits: dict[str, Awaitable[Any]] = {}
        if store["ok"] and not self._committed_lately(int(store.get("commits") or 0)):
            waits["ping"] = self.store.ping()
        actions = self.actions
        if actions is not None and callable(getattr(actions, "health", None)):
            waits["health"] = _coordinator_health(actions)
        if self.fleet is not None:
            waits["fleet"] = self.members()
        if len(waits) > 1:
            got = dict(zip(waits, await asyncio.gather(*waits.values()), strict=True))
        else:
            got = {name: await aw for name, aw in waits.items()}
        if "ping" in got:
            store["ok"] = bool(got["ping"])
        file_issues = list(store["issues"])
        if not store["ok"]:
            status = "critical" if store["failing_for_seconds"] > 30 else "degraded"
            if not file_issues:
                issues.append(f"store is failing ({store['last_error']}); writes are buffered in memory")
        if file_issues:  # the database file was deleted or replaced (and rebuilt, or not yet)
            status = "degraded" if status == "healthy" else status
            issues.extend(file_issues)
        skipped = max(int(store.get("skipped_rows") or 0), restore_skipped)
        store["skipped_rows"] = skipped
        if skipped:  # counted, not fatal: the rest was restored
            status = "degraded" if status == "healthy" else status
            issues.append(f"{skipped} stored row(s) could not be read at startup and were skipped")
        if store.get("dropped_writes"):
            status = "degraded" if status == "healthy" else status
            issues.append(f"{store['dropped_writes']} write(s) refused by the database on their data were dropped")
        if store.get("fallback"):
            status = "degraded"
            issues.append(f"database fell back to memory: {store['fallback']}; nothing survives a restart")
        budget = self.budget.status()
        if budget["exhausted"]:
            status = "degraded" if status == "healthy" else status
            issues.append(f"recovery budget exhausted for: {', '.join(budget['exhausted'])}")
        metrics = self.handler.metrics()
        rm = self.recovery
        active = rm.active_levels()
        if any(lv >= 5 for lv in active.values()):
            status = "degraded" if status == "healthy" else status
            issues.append(f"{sum(1 for lv in active.values() if lv >= 5)} group(s) reached level 5")
        stopped = rm.stopped_groups()
        if stopped:  # a dead letter: recovery of these groups does not hold, and has stopped
            status = "degraded" if status == "healthy" else status
            for error_id, reason in list(stopped.items())[:20]:
                group = self.handler.groups.get(error_id)
                what = f" ({group.message[:80]})" if group is not None else ""
                issues.append(f"error group {error_id}{what}: {reason}")
            if len(stopped) > 20:
                issues.append(f"{len(stopped) - 20} more error group(s) whose recovery does not hold")
        critical_open = self.handler.groups.critical_open  # a counter, not a walk
        if critical_open:
            status = "critical" if critical_open >= 3 else ("degraded" if status == "healthy" else status)
            issues.append(f"{critical_open} open critical error group(s)")
        coordinator: dict[str, Any] | None = None
        if "health" in got:
            answer = got["health"]
            if isinstance(answer, Exception):
                issues.append(f"coordinator health check failed: {answer!r}")
            else:
                coordinator = answer
                if not coordinator.get("healthy", True):
                    status = "degraded" if status == "healthy" else status
                    bad = [n for n, ok in (coordinator.get("components") or {}).items() if not ok]
                    issues.append("coordinator unhealthy" + (f": {', '.join(bad)} down" if bad else ""))
        return {
            "status": status,
            "issues": issues,
            "error_metrics": metrics,
            "recovery_metrics": {
                "recoveries": rm.recoveries,
                "successes": rm.successes,  # successes that held through verify_window
                "provisional": len(rm.probation),
                "recurred": rm.probation.recurred,
                "poison_tasks": rm.poisoned,
                "stopped_groups": sorted(stopped),
                "outcomes": dict(rm.counts),
                "in_flight": len(rm.inflight),
                "deferred": len(rm.deferred),
                "strategies": list(rm.strategies),
                "selection": self.policy.name,
            },
            "active_recovery_levels": active,
            "database": store,
            "budget": budget,
            "coordinator": coordinator,
            "resources": self.sampler.latest(),
            "timeouts": self.timeouts.snapshot(),
            # the live coordinators sharing the database (SPEC 10); this one alone without a fleet
            "fleet": got["fleet"] if "fleet" in got else await self.members(),
            "fleet_status": self.fleet.status() if self.fleet is not None else None,
        }
