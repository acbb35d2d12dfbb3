"""One group per fingerprint in the whole fleet (SPEC section 10): the same fingerprint reported to
two members is one group with one ``error_id``; counts are increments in the database.

Intake hands every occurrence's group to :meth:`GroupClaims.adopt` before it is stored: a group
this member just created is claimed in the database, and when another member has the group of
that fingerprint, the occurrence is counted into that one instead."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Protocol

from coordinator_plugins.error_handling.intake.group import GroupIndex
from coordinator_plugins.error_handling.model import ErrorReport
from coordinator_plugins.error_handling.storage.records import GroupRecord

logger = logging.getLogger(__name__)


class ClaimLedger(Protocol):
    """What claiming needs from the store (the PostgreSQL store has it)."""

    async def claim_group(self, fingerprint: str, error_id: str, regression_window: float) -> str: ...
    async def get_group(self, error_id: str) -> GroupRecord | None: ...


class GroupClaims:
    def __init__(self, store: ClaimLedger, groups: GroupIndex, regression_window: float) -> None:
        self.store = store
        self.groups = groups
        self.regression_window = regression_window
        self._pending: dict[str, asyncio.Future[ErrorReport]] = {}

    async def adopt(self, report: ErrorReport) -> ErrorReport:
        """The group an occurrence just folded into ``report`` belongs to, fleet-wide. A group
        this member just created is claimed in the database: when another member has the group of
        that fingerprint, the occurrence is counted into that one (same ``error_id``) instead.
        Occurrences joining a group while its claim is in flight wait for the claim."""
        pending = self._pending.get(report.error_id)
        if pending is not None:
            fleet_report = await asyncio.shield(pending)
            if fleet_report is not report:
                self._join(fleet_report, report)
            return fleet_report
        if not report.new_group:
            return report
        fut: asyncio.Future[ErrorReport] = asyncio.get_running_loop().create_future()
        self._pending[report.error_id] = fut
        result = report
        try:
            result = await self._claim(report)
        except Exception as exc:  # the database cannot answer: a group of this member's own
            logger.warning("fleet: could not claim the group of %s (%s); keeping it local", report.fingerprint, exc)
        finally:
            del self._pending[report.error_id]
            fut.set_result(result)
        return result

    def _join(self, fleet_report: ErrorReport, report: ErrorReport) -> None:
        fleet_report.aggregated_count += 1  # counted in the database when the occurrence commits
        fleet_report.last_seen = max(fleet_report.last_seen, report.last_seen)
        c = report.context
        fleet_report.add_targets(c.worker_id, c.task_id, c.metadata)

    async def _claim(self, report: ErrorReport) -> ErrorReport:
        canonical = await self.store.claim_group(report.fingerprint, report.error_id, self.regression_window)
        if canonical == report.error_id:
            return report
        groups = self.groups
        current = groups.get(canonical)
        stored = None
        if current is None:
            stored = await self.store.get_group(canonical)
            current = groups.get(canonical)  # another occurrence may have loaded it meanwhile
        if current is not None:
            self._join(current, report)
            groups.add(current)
            return current
        if stored is not None:
            fleet_report = stored.to_report()
            if fleet_report.resolution_status == "resolved":
                fleet_report.reopen(regression=True)
            self._join(fleet_report, report)
        else:  # claimed by a member whose first occurrence is not committed yet
            fleet_report = dataclasses.replace(report, error_id=canonical, persisted=False, aggregated_count=1)
        fleet_report.new_group = False
        groups.add(fleet_report)  # replaces this member's provisional group of the fingerprint
        return fleet_report
