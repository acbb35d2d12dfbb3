"""The reads of the DuckDB store: each runs a query module's function on the store's one reader
thread, with that thread's cursor of the store's :class:`Database` (never on the loop)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from coordinator_plugins.error_handling.storage.duckdb import analytics, queries
from coordinator_plugins.error_handling.storage.duckdb.batch import bulk_load
from coordinator_plugins.error_handling.storage.duckdb.database import Cursor, Database
from coordinator_plugins.error_handling.storage.duckdb.order import GroupOrder
from coordinator_plugins.error_handling.storage.records import (
    AliasRecord,
    GroupPage,
    GroupQuery,
    GroupRecord,
    LevelRecord,
    OccurrenceRecord,
    StoredState,
    StoreTotals,
    StrategyRun,
    StrategyScore,
    TimeoutRecord,
)

R = TypeVar("R")


class DuckDBReads:
    """The read half of the store; ``skipped_rows`` counts stored rows that could not be read."""

    def __init__(self, database: Database, order: GroupOrder) -> None:
        self.database = database
        self.order = order
        self.skipped_rows = 0
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eh-store-read")

    async def read(self, fn: Callable[[Cursor], R]) -> R:
        """``fn(cursor)`` on the reader thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, lambda: fn(self.database.cursor()))

    async def ping(self) -> bool:
        """True when a trivial read succeeds now."""
        try:
            await self.read(lambda cur: cur.execute("SELECT 1").fetchone())
            return True
        except Exception:
            return False

    def shutdown(self) -> None:
        """Wait for the read in progress, if any; no read runs after (blocking)."""
        self._reader.shutdown(wait=True)

    async def load_state(self, regression_window: float, max_groups: int) -> StoredState:
        state = await self.read(lambda cur: queries.load_state(cur, regression_window, max_groups))
        self.skipped_rows += state.skipped
        return state

    async def get_group(self, error_id: str) -> GroupRecord | None:
        return await self.read(lambda cur: queries.get_group(cur, error_id))

    async def list_groups(self, query: GroupQuery) -> GroupPage:
        return await self.read(lambda cur: queries.list_groups(cur, query, self.order))

    async def find_groups(self, fingerprints: list[str]) -> dict[str, tuple[GroupRecord, LevelRecord | None]]:
        """fingerprint -> (its stored group, open first; its level) for those the store holds, by
        the index on the fingerprint (see base.GroupLookup)."""
        return await self.read(lambda cur: queries.find_groups(cur, fingerprints))

    async def bulk_load(self, groups: list[GroupRecord], occurrences: list[OccurrenceRecord]) -> None:
        """Append whole groups and their occurrences in one transaction through DuckDB's appender:
        imports and benchmarks (the groups must be new to the store)."""
        await self.read(lambda cur: bulk_load(cur, groups, occurrences))
        self.order.note([(g, None) for g in groups])

    async def unresolved_groups(self, component: str | None = None, min_rank: int | None = None) -> list[GroupRecord]:
        return await self.read(lambda cur: queries.unresolved(cur, component, min_rank))

    async def occurrences(self, error_id: str, limit: int = 100) -> list[OccurrenceRecord]:
        return await self.read(lambda cur: analytics.occurrences(cur, error_id, limit))

    async def occurrence_series(
        self, error_id: str, buckets: int = 60, window: float | None = None
    ) -> dict[str, Any] | None:
        return await self.read(lambda cur: analytics.occurrence_series(cur, error_id, buckets, window))

    async def alias(self, alias_id: str) -> AliasRecord | None:
        return await self.read(lambda cur: queries.alias_of(cur, alias_id))

    async def recovery_level(self, error_id: str) -> LevelRecord | None:
        return await self.read(lambda cur: queries.level_of(cur, error_id))

    async def recovery_summary(self, limit: int = 100) -> dict[str, Any]:
        return await self.read(lambda cur: analytics.history_summary(cur, limit))

    async def strategy_performance(
        self, error_type: str | None = None, strategy_id: str | None = None, days: int = 30
    ) -> dict[str, Any]:
        return await self.read(lambda cur: analytics.performance_metrics(cur, error_type, strategy_id, days))

    async def strategy_runs(self, error_id: str | None = None, limit: int = 1000) -> list[StrategyRun]:
        return await self.read(lambda cur: analytics.strategy_runs(cur, error_id, limit))

    async def strategy_scores(self) -> list[StrategyScore]:
        return await self.read(analytics.strategy_scores)

    async def timeouts(self) -> list[TimeoutRecord]:
        return await self.read(analytics.timeouts)

    async def totals(self) -> StoreTotals:
        return await self.read(analytics.totals)
