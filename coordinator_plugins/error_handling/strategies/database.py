"""The built-in ``database`` strategy (HIGH): the coordinator's database and the plugin's store reconnected."""

from __future__ import annotations

from typing import Any

from coordinator_plugins.contract.protocol import CoordinatorProtocol
from coordinator_plugins.error_handling.storage.base import Store
from coordinator_plugins.error_handling.strategies.base import NotApplicable, RecoveryLevel
from coordinator_plugins.error_handling.strategies.builtin import BuiltinStrategy, has_methods


class DatabaseRecoveryStrategy(BuiltinStrategy):
    """HIGH: reconnect whichever of the coordinator's database and the plugin's store fails a
    health query, and verify it with a query again. Both answering: not applicable (SPEC 9).
    Never deletes or renames a file."""

    strategy_id = "database"
    categories = frozenset({"db_connection", "db_query", "db_locked"})
    applicable_reads = frozenset({"error_type", "category"})
    applicable_pure = True  # the coordinator's method is looked up, never called

    def __init__(self, coordinator: CoordinatorProtocol | None, store: Store | None = None) -> None:
        super().__init__(coordinator, "Database reconnect", RecoveryLevel.HIGH)
        self.store = store

    def is_applicable(self, error_info: dict[str, Any]) -> bool:
        category = str(error_info.get("category") or "")
        return (error_info.get("error_type") == "database" or category.startswith("db_")) and (
            has_methods(self.coordinator, "reconnect_database") or self.store is not None
        )

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        # Only a connection seen broken is acted on: reconnecting a healthy one (the host's, or the
        # plugin's own store when the error is the host's) fixes nothing and verifies nothing.
        c = self.coordinator if has_methods(self.coordinator, "reconnect_database", "health") else None
        targets: list[str] = []
        if c is not None and not (await c.health()).get("database"):
            targets.append("coordinator")
        if self.store is not None and not await self.store.ping():
            targets.append("store")
        if not targets:
            seen = (["the coordinator's database"] if c is not None else []) + (
                ["the plugin's store"] if self.store is not None else [])
            raise NotApplicable(
                f"no broken database connection to reconnect: {' and '.join(seen) or 'nothing'} answered a query"
                if seen else "no database connection this strategy can check")
        ok = True
        if c is not None and "coordinator" in targets:
            ok = bool(await c.reconnect_database()) and ok
            ok = bool((await c.health()).get("database")) and ok
        if "store" in targets and self.store is not None:
            ok = bool(await self.store.reconnect()) and ok
            ok = bool(await self.store.ping()) and ok
        error_info["details"]["reconnected"] = targets
        return ok
