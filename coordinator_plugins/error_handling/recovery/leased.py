"""A group's recovery under its fleet lease (SPEC section 10): taken before the first strategy
runs, renewed while it lasts (``fleet.lease``), released at the end. A group whose lease another
member holds is recovered there; here it waits until that lease would expire, so a member that
dies mid-recovery is taken over without anyone having to notice."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from coordinator_plugins.error_handling.model import ErrorReport

if TYPE_CHECKING:
    from coordinator_plugins.error_handling.fleet.lease import LeaseKeeper
    from coordinator_plugins.error_handling.recovery.manager import RecoveryManager

logger = logging.getLogger(__name__)
RETRY_UNREACHABLE = 1.0  # seconds before trying again when the database cannot answer


async def recover_leased(
    manager: RecoveryManager, keeper: LeaseKeeper, report: ErrorReport
) -> tuple[bool, dict[str, Any]]:
    info: dict[str, Any] = {"error_id": report.error_id, "success": False, "strategy_id": None,
                            "strategy_name": None, "recovery_level": 0, "execution_time": 0.0, "attempts": []}
    try:
        ok, owner, left = await keeper.acquire(report.error_id)
    except Exception as exc:
        if report.category.value.startswith("db_") or report.context.component == "store":
            # This member's own database link: its recovery acts on nothing another member owns,
            # and it cannot wait for a lease in the database it has lost.
            logger.warning("fleet: no lease for %s (%s); recovering this member's own database link", report.error_id,
                           exc)
            return await manager._recover(report)
        info["reason"] = f"fleet lease unavailable: {type(exc).__name__}: {exc}"
        manager._defer(report, RETRY_UNREACHABLE)
        return False, info
    if not ok:
        info.update(reason=f"recovery runs on fleet member {owner}", leased_by=owner)
        manager._defer(report, left + 0.25)
        return False, info
    try:
        return await manager._recover(report)
    finally:
        await keeper.release(report.error_id)
