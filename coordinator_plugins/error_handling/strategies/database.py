"""The built-in ``database`` strategy (HIGH): the coordinator's database and the plugin's store reconnected."""

from __future__ import annotations

from typing import Any

from coordinator_plugins.contract.protocol import CoordinatorProtocol
from coordinator_plugins.error_handling.storage.base import Store
from coordinator_plugins.error_handling.strategies.base import NotApplicable, RecoveryLevel
from coordinator_plugins.error_handling.strategies.builtin import BuiltinStrategy, has_methods


class DatabaseRecoveryStrategy(BuiltinStrategy):
    """HIGH: reconnect the coordinator's database and the plugin's store, verify both with a query.
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
        component = str(error_info.get("component") or "")
        c = self.coordinator if has_methods(self.coordinator, "reconnect_database", "health") else None
        targets: list[str] = []
        coord_ok = True
        if c is not None:
            coord_ok = bool((await c.health()).get("database"))
        store_ok = self.store is None or await self.store.ping()
        own = component in ("store", "error_handling")
        if c is not None and (not coord_ok or not own):
            targets.append("coordinator")
        if self.store is not None and (not store_ok or own or (coord_ok and not targets)):
            targets.append("store")
        if not targets:
            raise NotApplicable("no database connection to reconnect")
        ok = True
        if c is not None and "coordinator" in targets:
            ok = bool(await c.reconnect_database()) and ok
            ok = bool((await c.health()).get("database")) and ok
        if "store" in targets and self.store is not None:
            ok = bool(await self.store.reconnect()) and ok
            ok = bool(await self.store.ping()) and ok
        error_info["details"]["reconnected"] = targets
        return ok
