"""Strategy classes named by dotted path in config tests, and a seed-shaped coordinator."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from coordinator_plugins.error_handling import RecoveryLevel, RecoveryStrategy


class AlwaysWorks(RecoveryStrategy):
    def __init__(self, coordinator: Any) -> None:
        super().__init__(coordinator, "always works", RecoveryLevel.LOW)

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        return True


class HighActs(RecoveryStrategy):
    """A HIGH strategy that acts on every error (a stand-in for a restart or reconnect that is
    needed each time): the level-3+ action the storm and flood tests budget. The built-ins find
    nothing broken on a healthy farm (issue 27 item 1), so they are not that action."""

    def __init__(self, coordinator: Any) -> None:
        super().__init__(coordinator, "high acts", RecoveryLevel.HIGH)

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        return True


class SeedShapedCoordinator:
    """Shaped like the seed framework's coordinator: dicts and sets, a websocket-ish connection
    per worker, and workers that reconnect by themselves after their connection closes."""

    class Conn:
        def __init__(self, owner: SeedShapedCoordinator, worker_id: str) -> None:
            self.owner, self.worker_id, self.closed = owner, worker_id, False

        async def close(self) -> None:
            self.closed = True
            asyncio.get_running_loop().call_later(0.2, self.owner.reconnect, self.worker_id)

    def __init__(self, db: Any = None, db_path: str | None = None) -> None:
        self.workers: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.running_tasks: dict[str, str] = {}
        self.pending_tasks: set[str] = set()
        self.failed_tasks: set[str] = set()
        self.worker_connections: dict[str, Any] = {}
        self.db = db
        self.db_path = db_path
        self.reconnects = 0

    def add_worker(self, worker_id: str) -> None:
        self.workers[worker_id] = {"status": "active", "last_heartbeat": time.time()}
        self.worker_connections[worker_id] = self.Conn(self, worker_id)

    def reconnect(self, worker_id: str) -> None:
        self.reconnects += 1
        self.add_worker(worker_id)


class FleetProbe(RecoveryStrategy):
    """For the fleet tests (each member a ``serve`` process): logs when it starts and ends on
    which member, to ``$PROBE_LOG`` (a line of JSON each, appended), taking ``$PROBE_SECONDS``.
    Its level is ``$PROBE_LEVEL`` (LOW by default). It succeeds when the group it was started
    for is the one it was asked about and the log line was written."""

    def __init__(self, coordinator: Any) -> None:
        import os

        from coordinator_plugins.error_handling import RecoveryLevel as Level

        super().__init__(coordinator, "fleet probe", Level[os.environ.get("PROBE_LEVEL", "LOW")])

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        import json
        import os

        me, path = os.environ.get("PROBE_MEMBER", "?"), os.environ["PROBE_LOG"]
        start = time.time()
        with open(path, "a") as f:
            f.write(json.dumps({"member": me, "error_id": error_info["error_id"], "start": start}) + "\n")
        await asyncio.sleep(float(os.environ.get("PROBE_SECONDS", "0.3")))
        with open(path, "a") as f:
            f.write(json.dumps({"member": me, "error_id": error_info["error_id"], "start": start,
                                "end": time.time()}) + "\n")
        return True
