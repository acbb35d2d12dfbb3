"""The reference coordinator as a fleet member (SPEC section 10): it heartbeats its row in the
shared database, and takes the unfinished tasks of a member silent for ``lease_ttl``."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from coordinator_plugins.reference.db_pg import PostgresCoordinatorDB
from coordinator_plugins.reference.model import Task

if TYPE_CHECKING:
    from coordinator_plugins.reference.coordinator import Coordinator

logger = logging.getLogger(__name__)


async def fleet_tick(coord: Coordinator) -> None:
    """One tick of the ``fleet`` loop: heartbeat, then queue here the tasks of dead members."""
    db = coord.db
    if not isinstance(db, PostgresCoordinatorDB):
        return
    await db.heartbeat(coord.url)
    for entry in await db.take_over(coord.settings.lease_ttl):
        moved = []
        for row in entry["tasks"]:
            task = coord.tasks.get(row["task_id"])
            if task is None:
                task = Task(row["task_id"], dict(row["spec"]), attempt=int(row["attempt"]))
                coord.tasks[task.task_id] = task
            if task.final:
                continue
            coord.requeue(task)
            moved.append(task.task_id)
        coord.takeovers.append({"dead": entry["dead"], "silent_for": round(float(entry["silent_for"]), 3),
                                "tasks": moved, "at": time.time()})
        logger.warning("fleet: member %s silent for %.1f s: %d unfinished task(s) taken over by %s",
                       entry["dead"], entry["silent_for"], len(moved), coord.settings.coordinator_id)
