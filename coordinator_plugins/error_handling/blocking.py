"""Blocking calls of the integration's getters, for code that is not a coroutine.

The integration's getters are coroutines (SPEC 3): in an aiohttp handler, ``await`` them. Code
running in another thread (a seed coordinator's monitoring thread, a synchronous admin tool in
the same process) may call them through ``integration.blocking`` instead: each call runs the
coroutine on the integration's event loop and waits for its result, as ``anyio.from_thread.run``
does. Called on that event loop's own thread it would wait for itself, so it raises a
RuntimeError that says to ``await`` the getter instead.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from coordinator_plugins.error_handling.model import ErrorSeverity, ErrorType


class Running(Protocol):
    """The integration as the blocking calls see it: whether it runs, on which loop; its getters
    are called by name."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None: ...
    @property
    def started(self) -> bool: ...
    @property
    def closed(self) -> bool: ...


class BlockingIntegration:
    """``integration.blocking``: the getters, resolve and reset, each waiting up to ``timeout`` s."""

    def __init__(self, integration: Running, timeout: float = 30.0) -> None:
        self._integ = integration
        self.timeout = timeout

    def _call(self, name: str, *args: Any) -> Any:
        loop = self._integ.loop
        if loop is None or loop.is_closed() or not self._integ.started or self._integ.closed:
            raise RuntimeError(
                f"integration.blocking.{name}(): error handling is not running (it runs while its app does)"
            )
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError(
                f"integration.blocking.{name}() cannot wait on the event loop it needs: in a coroutine "
                f"(an aiohttp handler, for one) write `await integration.{name}(...)`"
            )
        future = asyncio.run_coroutine_threadsafe(getattr(self._integ, name)(*args), loop)
        try:
            return future.result(self.timeout)
        except TimeoutError:
            future.cancel()
            raise

    def get_error_metrics(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("get_error_metrics")
        return result

    def get_performance_metrics(
        self, error_type: str | None = None, strategy_id: str | None = None, days: int = 30
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._call("get_performance_metrics", error_type, strategy_id, days)
        return result

    def get_unresolved_errors(
        self, component: str | None = None, severity: str | ErrorSeverity | None = None
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("get_unresolved_errors", component, severity)
        return result

    def get_recovery_history(self, error_id: str | None = None) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._call("get_recovery_history", error_id)
        return result

    def get_strategy_recommendations(self, error_type: str | ErrorType) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("get_strategy_recommendations", error_type)
        return result

    def resolve_error(self, error_id: str, resolution: str = "manual", details: dict[str, Any] | None = None) -> bool:
        return bool(self._call("resolve_error", error_id, resolution, details))

    def reset_recovery_level(self, error_id: str) -> bool:
        return bool(self._call("reset_recovery_level", error_id))

    def reset_all_recovery_levels(self) -> int:
        return int(self._call("reset_all_recovery_levels"))

    def run_diagnostics(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("run_diagnostics")
        return result
