"""The registered strategies, and which of them can act on an error at all.

Declared categories (``RecoveryStrategy.categories``) decide first, for free and cached per
category; then a strategy's synchronous ``is_applicable``. A report no strategy can act on gets
no recovery: no task, no level walk, no write (issue 12: nearly every new group used to start a
full pass in which nothing applied)."""

from __future__ import annotations

import inspect
from typing import Any

from coordinator_plugins.error_handling.model import ErrorReport
from coordinator_plugins.error_handling.recovery.state import Targets, strategy_info
from coordinator_plugins.error_handling.strategies.base import LEVEL_STRATEGIES, RecoveryStrategy


class Candidates:
    def __init__(self) -> None:
        self.strategies: dict[str, RecoveryStrategy] = {}
        self._by_category: dict[str, list[RecoveryStrategy]] = {}
        self._allowed: dict[int, set[Any]] = {}  # max level -> the strategy levels it allows

    def add(self, strategy_id: str, strategy: RecoveryStrategy) -> None:
        if not isinstance(strategy, RecoveryStrategy):
            raise ValueError(f"strategy {strategy_id!r}: expected a RecoveryStrategy instance")
        if not isinstance(strategy_id, str) or not strategy_id:
            raise ValueError("strategy_id: expected a non-empty string")
        if strategy_id in self.strategies:
            raise ValueError(f"strategy_id: {strategy_id!r} is already registered")
        strategy.strategy_id = strategy_id
        self.strategies[strategy_id] = strategy
        self._by_category.clear()

    def for_category(self, category: str) -> list[RecoveryStrategy]:
        """The strategies whose declared categories include ``category``."""
        found = self._by_category.get(category)
        if found is None:
            found = self._by_category[category] = [s for s in self.strategies.values() if s.applies_to(category)]
        return found

    def levels(self, category: str | None = None) -> list[int]:
        """The progressive levels at which at least one strategy (for ``category``) may run."""
        pool = self.strategies.values() if category is None else self.for_category(category)
        return [lv for lv, allowed in LEVEL_STRATEGIES.items() if any(s.level in allowed for s in pool)]

    def may_act(self, report: ErrorReport, max_level: int) -> bool:
        """Could a strategy act on this report now? An async ``is_applicable``, or one that
        raises, is left to the recovery itself to ask."""
        allowed = self._allowed.get(max_level)
        if allowed is None:
            allowed = self._allowed[max_level] = {lvl for lv in range(1, max_level + 1) for lvl in LEVEL_STRATEGIES[lv]}
        probe: dict[str, Any] | None = None
        for s in self.for_category(report.category.value):
            if s.level not in allowed:
                continue
            check = s.is_applicable
            if inspect.iscoroutinefunction(check):
                return True
            if probe is None:
                probe = strategy_info(report, 1, 0.0, Targets.peek(report))
            try:
                answer = check(probe)
            except Exception:
                return True
            if inspect.isawaitable(answer):
                close = getattr(answer, "close", None)
                if callable(close):
                    close()
                return True
            if answer:
                return True
        return False
