"""The registered strategies, and which of them can act on an error at all.

Declared categories (``RecoveryStrategy.categories``) decide first, for free and cached per
category; then a strategy's synchronous ``is_applicable``, given only the keys of error_info
that the candidates declare they read (``applicable_reads``), or all of it when one does not. A
report no strategy can act on gets no recovery: no task, no level walk, no write (issue 12:
nearly every new group used to start a full pass in which nothing applied).

Most reports name no worker, task or operation. When every candidate's check is synchronous,
declares the keys it reads and declares itself pure (``applicable_pure``: it answers from those
keys alone), and the keys are among the error's type, its category and its targets, the answer
for such a report is a function of (category, error type) only: it is asked once and kept
(until a strategy is registered), not asked again on every report."""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

from coordinator_plugins.error_handling.model import ErrorReport
from coordinator_plugins.error_handling.recovery.state import Targets, strategy_info
from coordinator_plugins.error_handling.strategies.base import (
    LEVEL_STRATEGIES,
    RecoveryStrategy,
    check_strategy,
    declared_pure,
    declared_reads,
)

# The keys whose values, for a report that names no worker, task or operation, follow from its
# category and error type: a pure check that reads no others answers every such report alike.
UNTARGETED_READS = frozenset(
    {"error_type", "category", "worker_ids", "worker_id", "task_ids", "task_id", "callable", "args", "kwargs"}
)


class _Plan(NamedTuple):
    """What a category's check asks, decided when strategies are registered."""

    checks: list[tuple[RecoveryStrategy, bool]]  # the strategies, and whether each check is async
    reads: frozenset[str] | None  # the keys they read (None: any)
    keepable: bool  # an untargeted report's answer may be kept (see the module's docstring)


class Candidates:
    def __init__(self) -> None:
        self.strategies: dict[str, RecoveryStrategy] = {}
        self._by_category: dict[str, list[RecoveryStrategy]] = {}
        self._checks: dict[tuple[str, int], _Plan] = {}  # per (category, max level)
        # per (category, max level, error type): the kept answer for an untargeted report
        self._untargeted: dict[tuple[str, int, str], bool] = {}

    def add(self, strategy_id: str, strategy: RecoveryStrategy) -> None:
        if not isinstance(strategy, RecoveryStrategy):
            raise ValueError(f"strategy {strategy_id!r}: expected a RecoveryStrategy instance")
        if not isinstance(strategy_id, str) or not strategy_id:
            raise ValueError("strategy_id: expected a non-empty string")
        if strategy_id in self.strategies:
            raise ValueError(f"strategy_id: {strategy_id!r} is already registered")
        check_strategy(strategy, strategy_id)
        strategy.strategy_id = strategy_id
        self.strategies[strategy_id] = strategy
        self._by_category.clear()
        self._checks.clear()
        self._untargeted.clear()

    def for_category(self, category: str) -> list[RecoveryStrategy]:
        """The strategies whose declared categories include ``category``."""
        found = self._by_category.get(category)
        if found is None:
            found = self._by_category[category] = [s for s in self.strategies.values() if s.applies_to(category)]
        return found

    def may_act(self, report: ErrorReport, max_level: int) -> bool:
        """Could a strategy act on this report now? An async ``is_applicable``, or one that
        raises, is left to the recovery itself to ask."""
        key = (report.category._value_, max_level)
        plan = self._checks.get(key)
        if plan is None:
            plan = self._checks[key] = self._plan(key[0], max_level)
        if plan.keepable and not report.target_workers and not report.target_tasks and (
            "_operation" not in report.recovery_details
        ):
            memo_key = (key[0], max_level, report.error_type._value_)
            kept = self._untargeted.get(memo_key)
            if kept is None:
                kept = self._untargeted[memo_key] = self._ask(report, plan)
            return kept
        return self._ask(report, plan)

    def ask(self, report: ErrorReport, max_level: int) -> bool:
        """:meth:`may_act`'s answer asked of each check now, never a kept one."""
        return self._ask(report, self._plan(report.category._value_, max_level))

    def kept_answers(self) -> dict[tuple[str, int, str], bool]:
        """The answers kept for untargeted reports: (category, max level, error type) -> answer."""
        return dict(self._untargeted)

    def _ask(self, report: ErrorReport, plan: _Plan) -> bool:
        checks, reads, _ = plan
        probe: dict[str, Any] | None = None
        for s, is_async in checks:
            if is_async:
                return True
            if probe is None:
                probe = strategy_info(report, 1, 0.0, Targets.peek(report), reads)
            try:
                answer = s.is_applicable(probe)
            except Exception:
                return True
            if answer.__class__ is bool:  # the common answer: no awaitable check (an ABC's isinstance)
                if answer:
                    return True
                continue
            if inspect.isawaitable(answer):
                close = getattr(answer, "close", None)
                if callable(close):
                    close()
                return True
            if answer:
                return True
        return False

    def _plan(self, category: str, max_level: int) -> _Plan:
        allowed = {lvl for lv in range(1, max_level + 1) for lvl in LEVEL_STRATEGIES[lv]}
        pool = [s for s in self.for_category(category) if s.level in allowed]
        reads: frozenset[str] | None = frozenset()
        for s in pool:
            declared = declared_reads(s)
            reads = None if declared is None or reads is None else reads | declared
        checks = [(s, inspect.iscoroutinefunction(s.is_applicable)) for s in pool]
        keepable = (
            reads is not None
            and reads <= UNTARGETED_READS
            and all(not is_async and declared_pure(s) for s, is_async in checks)
        )
        return _Plan(checks, reads, keepable)
