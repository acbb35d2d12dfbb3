"""The built-in ``coordinator`` strategy (CRITICAL): the coordinator's failing components restarted."""

from __future__ import annotations

from typing import Any

from coordinator_plugins.contract.protocol import CoordinatorProtocol
from coordinator_plugins.error_handling.strategies.base import NotApplicable, RecoveryLevel
from coordinator_plugins.error_handling.strategies.builtin import BuiltinStrategy, has_methods


class CoordinatorRecoveryStrategy(BuiltinStrategy):
    """CRITICAL: restart the internal component the error names (or, naming none, each one) that
    is seen not working (one that is running is left alone: not applicable), or reload
    state from the database for state errors; succeed when each restarted loop ticked again.
    Never drops worker connections or requeues unrelated tasks. A coordinator with nothing to
    restart (a seed-shaped one without ``restart_*`` methods) is not applicable, never a success."""

    strategy_id = "coordinator"
    categories = frozenset({"coordinator_error", "coordinator_crash", "scheduler_stalled", "state_error"})
    applicable_reads = frozenset({"error_type", "category"})

    def __init__(self, coordinator: CoordinatorProtocol | None) -> None:
        super().__init__(coordinator, "Coordinator component restart", RecoveryLevel.CRITICAL)

    @staticmethod
    def _state(error_info: dict[str, Any]) -> bool:
        return error_info.get("category") == "state_error" or error_info.get("error_type") == "state"

    def is_applicable(self, error_info: dict[str, Any]) -> bool:
        category = str(error_info.get("category") or "")
        etype = error_info.get("error_type")
        c = self.coordinator
        if not (etype in ("coordination", "scheduling", "state")
                or category.split("_")[0] in ("coordinator", "scheduler", "state")):
            return False
        if not has_methods(c, "restart_component", "component_healthy", "component_names"):
            return False
        assert c is not None
        return bool(c.component_names()) or (self._state(error_info) and has_methods(c, "reload_state"))

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        c = self._c()
        names = c.component_names()
        meta = error_info.get("metadata") or {}
        wanted = meta.get("component") or error_info.get("component")
        # Only a component seen not working is restarted: restarting a loop that ticks fixes nothing.
        looked = [wanted] if wanted in names else names
        targets = [n for n in looked if not await c.component_healthy(n)]
        state = self._state(error_info) and has_methods(c, "reload_state")
        if not targets and not state:
            why = (f"component {wanted!r} is running" if wanted in names
                   else "all are healthy" if names else "none is restartable")
            raise NotApplicable("no component to restart: " + why)
        restarted = []
        for name in targets:
            if await c.restart_component(name):
                restarted.append(name)
        error_info["details"]["restarted"] = restarted
        reloaded = True
        if state:
            reloaded = bool(await c.reload_state())
            error_info["details"]["state_reloaded"] = reloaded
        healthy = [await c.component_healthy(n) for n in targets]
        return all(healthy) and len(restarted) == len(targets) and reloaded
