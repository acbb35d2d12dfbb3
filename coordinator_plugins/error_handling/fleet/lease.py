"""Recovery leases: at most one strategy runs per group in the whole fleet (SPEC section 10).

A member takes a group's lease in the database before its recovery starts, renews every lease it
holds every ``ttl / 3`` seconds while the recovery runs, and releases it at the end. A member that
dies stops renewing: its leases expire after ``ttl`` seconds and any survivor may take them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class LeaseLedger(Protocol):
    """What the keeper needs from the store (the PostgreSQL store has it)."""

    async def acquire_lease(self, error_id: str, ttl: float) -> tuple[bool, str, float]: ...
    async def renew_leases(self, error_ids: list[str], ttl: float) -> list[str]: ...
    async def release_lease(self, error_id: str) -> None: ...


class LeaseKeeper:
    def __init__(self, ledger: LeaseLedger, ttl: float) -> None:
        self.ledger = ledger
        self.ttl = ttl
        self.held: dict[str, int] = {}  # error id -> nested holds (a takeover and a report may overlap)
        self.granted = 0
        self.refused = 0
        self.lost = 0
        self.failures = 0
        self._renewer: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Between :meth:`start` and :meth:`stop`: recoveries take their lease through it."""
        return self._renewer is not None

    def start(self) -> None:
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_loop(), name="eh-fleet-leases")

    async def stop(self) -> None:
        task, self._renewer = self._renewer, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for error_id in list(self.held):
            with contextlib.suppress(Exception):
                await self.ledger.release_lease(error_id)
        self.held.clear()

    async def acquire(self, error_id: str) -> tuple[bool, str, float]:
        """(granted, owner, seconds left on the owner's lease). Raises the store's error when the
        database cannot answer (the caller decides whether to wait)."""
        ok, owner, left = await self.ledger.acquire_lease(error_id, self.ttl)
        if ok:
            self.granted += 1
            self.held[error_id] = self.held.get(error_id, 0) + 1
        else:
            self.refused += 1
        return ok, owner, left

    async def release(self, error_id: str) -> None:
        n = self.held.get(error_id, 0) - 1
        if n > 0:
            self.held[error_id] = n
            return
        self.held.pop(error_id, None)
        try:
            await self.ledger.release_lease(error_id)
        except Exception as exc:  # it expires by itself after ttl
            logger.warning("fleet: could not release the lease of %s (%s); it expires in %.0f s", error_id, exc,
                           self.ttl)

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            ids = list(self.held)
            if not ids:
                continue
            try:
                kept = set(await self.ledger.renew_leases(ids, self.ttl))
            except Exception as exc:
                self.failures += 1
                logger.warning("fleet: renewing %d lease(s) failed: %s", len(ids), exc)
                continue
            for error_id in ids:
                if error_id not in kept and error_id in self.held:
                    self.lost += 1
                    logger.warning("fleet: the lease of %s was lost (taken over after expiring)", error_id)

    def status(self) -> dict[str, Any]:
        return {"held": sorted(self.held), "ttl": self.ttl, "granted": self.granted, "refused": self.refused,
                "lost": self.lost, "renew_failures": self.failures}
