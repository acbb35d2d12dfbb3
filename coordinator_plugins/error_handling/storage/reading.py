"""The reads of a store composed of parts: answered by the read part it holds (``reads``, a
:class:`~.base.StoreReads`), unchanged. Both stores are built this way."""

from __future__ import annotations

from typing import Any

from coordinator_plugins.error_handling.storage.base import StoreReads
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


class ForwardedReads:
    """Base of a store whose :class:`~.base.StoreReads` methods are those of ``self.reads``."""

    reads: StoreReads

    async def load_state(self, regression_window: float, max_groups: int) -> StoredState:
        return await self.reads.load_state(regression_window, max_groups)

    async def get_group(self, error_id: str) -> GroupRecord | None:
        return await self.reads.get_group(error_id)

    async def list_groups(self, query: GroupQuery) -> GroupPage:
        return await self.reads.list_groups(query)

    async def unresolved_groups(self, component: str | None = None, min_rank: int | None = None) -> list[GroupRecord]:
        return await self.reads.unresolved_groups(component, min_rank)

    async def occurrences(self, error_id: str, limit: int = 100) -> list[OccurrenceRecord]:
        return await self.reads.occurrences(error_id, limit)

    async def occurrence_series(
        self, error_id: str, buckets: int = 60, window: float | None = None
    ) -> dict[str, Any] | None:
        return await self.reads.occurrence_series(error_id, buckets, window)

    async def alias(self, alias_id: str) -> AliasRecord | None:
        return await self.reads.alias(alias_id)

    async def recovery_level(self, error_id: str) -> LevelRecord | None:
        return await self.reads.recovery_level(error_id)

    async def recovery_summary(self, limit: int = 100) -> dict[str, Any]:
        return await self.reads.recovery_summary(limit)

    async def strategy_performance(
        self, error_type: str | None = None, strategy_id: str | None = None, days: int = 30
    ) -> dict[str, Any]:
        return await self.reads.strategy_performance(error_type, strategy_id, days)

    async def strategy_runs(self, error_id: str | None = None, limit: int = 1000) -> list[StrategyRun]:
        return await self.reads.strategy_runs(error_id, limit)

    async def strategy_scores(self) -> list[StrategyScore]:
        return await self.reads.strategy_scores()

    async def timeouts(self) -> list[TimeoutRecord]:
        return await self.reads.timeouts()

    async def totals(self) -> StoreTotals:
        return await self.reads.totals()
