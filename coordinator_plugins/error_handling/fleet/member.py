"""This coordinator as a member of a fleet sharing one PostgreSQL database (SPEC section 10).

One background loop keeps the promises that need the other members:

- it heartbeats this member's row (``GET /diagnostics`` lists the live members);
- it applies the resolutions and resets other members published (one view, within 2 s);
- it learns the strategy runs other members recorded (one memory, within 5 s);
- it takes over recoveries whose member stopped renewing their lease (takeover within
  ``lease_ttl`` + 5 s): it loads the group and recovers it here, under a lease of its own;
- now and then it prunes old budget actions, events and long-gone members (idempotent).

It holds the recovery leases (:mod:`.lease`) while it runs. New groups are claimed fleet-wide by
:mod:`.claim`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from coordinator_plugins.error_handling.config import ErrorHandlingConfig
from coordinator_plugins.error_handling.fleet import FleetLedger
from coordinator_plugins.error_handling.fleet.lease import LeaseKeeper
from coordinator_plugins.error_handling.intake.group import GroupIndex
from coordinator_plugins.error_handling.model import ErrorReport, iso, utcnow
from coordinator_plugins.error_handling.storage.records import StrategyRun

logger = logging.getLogger(__name__)
POLL = 0.4  # seconds between polls of events (resolutions, resets)
SLOW = 1.0  # seconds between heartbeats, polls of runs and takeover scans
LOOKBACK = 200  # ids read again behind the last seen (ids become visible in commit order, not id order)


class RecoveryControl(Protocol):
    """What the fleet does to this member's recoveries (``recovery.manager.RecoveryManager``)."""

    @property
    def closed(self) -> bool: ...
    @property
    def inflight(self) -> Mapping[str, object]: ...
    @property
    def levels(self) -> Mapping[str, object]: ...
    def schedule(self, report: ErrorReport) -> str: ...
    def reset_level(self, error_id: str) -> bool: ...


class Fleet:
    """``learn`` folds a run another member recorded into this member's learning
    (``fleet.memory.learn_remote``)."""

    def __init__(
        self,
        config: ErrorHandlingConfig,
        store: FleetLedger,
        groups: GroupIndex,
        recovery: RecoveryControl,
        leases: LeaseKeeper,
        learn: Callable[[StrategyRun], None],
    ) -> None:
        self.config = config
        self.store = store
        self.groups = groups
        self.recovery = recovery
        self.learn = learn
        self.coordinator_id: str = config.coordinator_id
        self.ttl: float = config.lease_ttl
        self.leases = leases
        self.info: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
        self._last_event = 0
        self._last_run = 0
        self._seen_events: set[int] = set()
        self._seen_runs: set[int] = set()
        self._tried: set[tuple[str, str]] = set()
        self.takeovers: deque[dict[str, Any]] = deque(maxlen=200)
        self.events_applied = 0
        self.runs_learned = 0
        self.loop_errors = 0
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.member_heartbeat(self.info)
        self._last_event = await self.store.last_event_id()  # the state loaded at startup has the rest
        self._last_run = await self.store.last_run_id()
        self.leases.start()  # recoveries take their lease from now on
        self._task = asyncio.create_task(self._loop(), name="eh-fleet")
        logger.info("fleet: %s joined (lease_ttl %.0f s)", self.coordinator_id, self.ttl)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.leases.stop()
        with contextlib.suppress(Exception):
            await self.store.member_leave()

    async def publish(self, kind: str, error_id: str | None, payload: dict[str, Any] | None = None) -> None:
        """Tell every member of a resolution or reset made here (after it is durable)."""
        try:
            await self.store.publish_event(kind, error_id, payload)
        except Exception as exc:
            logger.error("fleet: could not publish %s of %s: %s", kind, error_id, exc)

    # -- the loop ----------------------------------------------------------------------------------------
    async def _loop(self) -> None:
        next_slow = 0.0
        next_prune = time.monotonic() + 30
        while True:
            try:
                await self._apply_events()
                now = time.monotonic()
                if now >= next_slow:
                    next_slow = now + SLOW
                    await self.store.member_heartbeat(self._member_info())
                    await self._learn_runs()
                    await self._take_over()
                if now >= next_prune:
                    next_prune = now + 60
                    await self.store.prune_fleet(self.config.budget_window, self.ttl)
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.loop_errors += 1
                if self.last_error is None:
                    logger.warning("fleet: sync with the database failed: %s", exc)
                self.last_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(POLL)

    def _member_info(self) -> dict[str, Any]:
        return {**self.info, "open_groups": self.groups.count_open(),
                "in_flight": len(self.recovery.inflight), "leases": len(self.leases.held)}

    async def _apply_events(self) -> None:
        events = await self.store.events_since(max(0, self._last_event - LOOKBACK))
        for ev in events:
            eid = ev["id"]
            if eid in self._seen_events:
                continue
            self._seen_events.add(eid)
            self._last_event = max(self._last_event, eid)
            self.apply_event(ev["kind"], ev["error_id"], ev["payload"])
        floor = self._last_event - LOOKBACK
        self._seen_events = {i for i in self._seen_events if i > floor}

    def apply_event(self, kind: str, error_id: str | None, payload: dict[str, Any]) -> None:
        """A resolution or reset made by another member (already durable there)."""
        self.events_applied += 1
        rm = self.recovery
        groups = self.groups
        if kind == "reset_all":
            for e in list(rm.levels):
                self._unstop(e)
                rm.reset_level(e)
            return
        if error_id is None:
            return
        report = groups.get(error_id)
        if kind == "resolve" and report is not None and report.is_open:
            report.resolve(payload.get("resolution") or "manual")
            groups.mark(report)
        if kind in ("resolve", "reset"):
            self._unstop(error_id)
            if error_id in rm.levels:
                rm.reset_level(error_id)

    def _unstop(self, error_id: str) -> None:
        report = self.groups.get(error_id)
        if report is not None:
            report.recovery_details.pop("stopped", None)
            report.recovery_details.pop("failure_reason", None)

    async def _learn_runs(self) -> None:
        runs = await self.store.runs_since(max(0, self._last_run - LOOKBACK))
        for rid, run in runs:
            if rid in self._seen_runs:
                continue
            self._seen_runs.add(rid)
            self._last_run = max(self._last_run, rid)
            self.learn(run)
            self.runs_learned += 1
        floor = self._last_run - LOOKBACK
        self._seen_runs = {i for i in self._seen_runs if i > floor}

    async def _take_over(self) -> None:
        """Recover here the open groups whose lease expired in another member's hands."""
        rm = self.recovery
        if rm.closed or not self.config.auto_recover:
            return
        for lease in await self.store.orphaned_leases():
            error_id, owner = lease["error_id"], lease["owner"]
            if error_id in rm.inflight or (error_id, owner) in self._tried:
                continue
            self._tried.add((error_id, owner))
            groups = self.groups
            report = groups.get(error_id)
            if report is None:
                stored = await self.store.get_group(error_id)
                if stored is None:
                    continue
                report = stored.to_report()
                groups.add(report)
            if not report.is_open:
                continue
            status = rm.schedule(report)
            after = self.ttl + float(lease["expired_for"])  # since the owner's last renewal
            self.takeovers.append({"error_id": error_id, "from": owner, "at": iso_now(), "status": status,
                                   "seconds_since_last_renewal": round(after, 3)})
            logger.warning("fleet: taking over the recovery of %s from %s (its lease expired %.1f s ago): %s",
                           error_id, owner, lease["expired_for"], status)

    # -- diagnostics --------------------------------------------------------------------------------------
    async def members(self) -> list[dict[str, Any]]:
        """The live members (heartbeat within ``lease_ttl``), this one first."""
        rows = await self.store.members(self.ttl)
        live = [
            {"coordinator_id": r["coordinator_id"], "last_seen": iso(r["last_seen"]),
             "started_at": iso(r["started_at"]),
             "seconds_since_heartbeat": round(r["age"], 3), "self": r["coordinator_id"] == self.coordinator_id,
             **{k: r[k] for k in ("host", "pid", "open_groups", "in_flight", "leases") if k in r}}
            for r in rows
            if r["live"]
        ]
        live.sort(key=lambda m: (not m["self"], m["coordinator_id"]))
        return live

    def status(self) -> dict[str, Any]:
        return {"coordinator_id": self.coordinator_id, "lease_ttl": self.ttl, "leases": self.leases.status(),
                "events_applied": self.events_applied, "runs_learned": self.runs_learned,
                "takeovers": list(self.takeovers), "sync_errors": self.loop_errors, "last_error": self.last_error}


async def live_members(fleet: Fleet | None, coordinator_id: str) -> list[dict[str, Any]]:
    """The fleet's live members, or this coordinator alone (no fleet, or the database cannot say)."""
    if fleet is not None:
        try:
            return await fleet.members()
        except Exception as exc:
            logger.warning("fleet: members unavailable: %s", exc)
    return [{"coordinator_id": coordinator_id, "last_seen": iso_now(), "self": True}]


def iso_now() -> str:
    return iso(utcnow()) or ""
