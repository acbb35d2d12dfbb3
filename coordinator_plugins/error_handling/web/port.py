"""What the HTTP routes use of the plugin: the integration's public operations, its config and
its store, as a Protocol, so that the web layer never holds (or imports) the integration itself.
``plugin.attach`` hands the integration over as this port."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from coordinator_plugins.error_handling.config import ErrorHandlingConfig
from coordinator_plugins.error_handling.model import ErrorReport
from coordinator_plugins.error_handling.storage.base import Store
from coordinator_plugins.error_handling.storage.records import IdempotencyRecord


class MetricsPage(Protocol):
    def render(self) -> bytes: ...


class ErrorsApi(Protocol):
    @property
    def config(self) -> ErrorHandlingConfig: ...
    @property
    def store(self) -> Store: ...
    @property
    def metrics(self) -> MetricsPage | None: ...

    async def ingest(
        self,
        error: BaseException | str,
        context: dict[str, Any] | None,
        recover: bool | None = None,
        idempotency: Callable[[ErrorReport], IdempotencyRecord] | None = None,
    ) -> tuple[ErrorReport, int, str]: ...
    async def resolve(
        self, error_id: str, resolution: str = "manual", details: dict[str, Any] | None = None
    ) -> bool | None: ...
    async def group_id(self, error_id: str) -> str: ...
    async def get_recovery_history(self, error_id: str | None = None, limit: int = 100) -> dict[str, Any] | None: ...
    async def get_performance_metrics(
        self, error_type: str | None = None, strategy_id: str | None = None, days: int = 30
    ) -> dict[str, Any]: ...
    async def get_occurrence_series(
        self, error_id: str, buckets: int = 60, window: float | None = None
    ) -> dict[str, Any] | None: ...
    async def reset_recovery_level(self, error_id: str) -> bool: ...
    async def reset_all_recovery_levels(self) -> int: ...
    async def run_diagnostics(self) -> dict[str, Any]: ...
    def explain_strategies(self, error_type: str | None = None) -> dict[str, Any]: ...
