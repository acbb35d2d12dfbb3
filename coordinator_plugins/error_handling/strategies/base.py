"""The RecoveryStrategy base: applicability, timing, outcome capture."""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


class RecoveryLevel(enum.Enum):
    """How invasive a strategy is."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class ProgressiveRecoveryLevel(enum.IntEnum):
    """The five escalation levels of progressive recovery."""

    LEVEL_1 = 1  # basic retry with minimal impact
    LEVEL_2 = 2  # enhanced retry, light component actions
    LEVEL_3 = 3  # component restart or reset
    LEVEL_4 = 4  # system-component recovery
    LEVEL_5 = 5  # full system recovery


# Which strategy levels each progressive level may run (SPEC section 3).
LEVEL_STRATEGIES: dict[int, tuple[RecoveryLevel, ...]] = {
    1: (RecoveryLevel.LOW,),
    2: (RecoveryLevel.LOW, RecoveryLevel.MEDIUM),
    3: (RecoveryLevel.MEDIUM,),
    4: (RecoveryLevel.MEDIUM, RecoveryLevel.HIGH),
    5: (RecoveryLevel.HIGH, RecoveryLevel.CRITICAL),
}

OUTCOMES = ("success", "failure", "timeout", "error", "not_applicable", "budget_exhausted")


@dataclass(slots=True)
class StrategyResult:
    """What one strategy run did."""

    strategy_id: str
    outcome: str
    execution_time: float = 0.0
    affected_tasks: list[str] = field(default_factory=list)
    recovered_tasks: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def success(self) -> bool:
        return self.outcome == "success"


class NotApplicable(Exception):
    """Raised by ``_execute_impl`` when it finds its target does not exist: not a failure."""


class RecoveryStrategy:
    """Base class. Subclasses implement ``async _execute_impl(error_info) -> bool`` and may override
    ``is_applicable(error_info) -> bool``.

    ``error_info`` is a fresh dict per run; a strategy may record what it touched in
    ``error_info["affected_tasks"]`` and ``error_info["recovered_tasks"]`` (lists of task ids) and
    anything else in ``error_info["details"]``.
    """

    strategy_id: str = ""

    def __init__(self, coordinator: Any, name: str, level: RecoveryLevel) -> None:
        if not isinstance(level, RecoveryLevel):
            raise ValueError(f"level: expected a RecoveryLevel, got {level!r}")
        self.coordinator = coordinator
        self.name = name
        self.level = level
        self.runs = 0
        self.successes = 0

    def is_applicable(self, error_info: dict[str, Any]) -> bool:
        return True

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        raise NotImplementedError("recovery strategy implementation not provided")

    async def execute(self, error_info: dict[str, Any]) -> bool:
        """Seed-compatible: run and return True only on verified success."""
        return (await self.run(error_info)).success

    async def run(self, error_info: dict[str, Any]) -> StrategyResult:
        """Run once: not_applicable, success, failure or error. Timeouts and cancellation propagate
        (the caller owns the timeout); the subclass's ``finally`` blocks restore what it changed."""
        info = dict(error_info)
        info.setdefault("affected_tasks", [])
        info.setdefault("recovered_tasks", [])
        info.setdefault("details", {})
        sid = self.strategy_id or self.name
        try:
            applicable = self.is_applicable(info)
            if inspect.isawaitable(applicable):
                applicable = await applicable
        except Exception as exc:
            logger.exception("strategy %s: is_applicable failed", sid)
            return StrategyResult(sid, "error", error=f"{type(exc).__name__}: {exc}")
        if not applicable:
            return StrategyResult(sid, "not_applicable")
        start = time.perf_counter()
        self.runs += 1
        try:
            ok = bool(await self._execute_impl(info))
            outcome, err = ("success" if ok else "failure"), None
        except (asyncio.CancelledError, TimeoutError):
            raise
        except NotApplicable as exc:
            self.runs -= 1
            return StrategyResult(sid, "not_applicable", time.perf_counter() - start, error=str(exc) or None)
        except Exception as exc:
            logger.warning("strategy %s raised %r", sid, exc)
            outcome, err = "error", f"{type(exc).__name__}: {exc}"
        if outcome == "success":
            self.successes += 1
        return StrategyResult(
            sid,
            outcome,
            time.perf_counter() - start,
            list(info["affected_tasks"]),
            list(info["recovered_tasks"]),
            dict(info["details"]),
            err,
        )
