"""The RecoveryStrategy base: applicability, timing, outcome capture."""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from coordinator_plugins.error_handling.model import ErrorCategory

logger = logging.getLogger(__name__)
CATEGORY_VALUES = frozenset(c.value for c in ErrorCategory)


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

# Categories of a task's own failure: the task ran and did not end well on its worker.
TASK_CATEGORIES = frozenset({"task_error", "task_timeout", "task_resource"})


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


def normalize_categories(categories: Iterable[Any], key: str) -> frozenset[str]:
    """``ErrorCategory`` members or their string values, as strings; ValueError naming ``key``
    and listing the valid categories for anything else."""
    if isinstance(categories, (str, bytes)) or not isinstance(categories, Iterable):
        raise ValueError(f"{key}: expected a collection of ErrorCategory members or names, got {categories!r}")
    valid = CATEGORY_VALUES
    out = set()
    for c in categories:
        value = getattr(c, "value", c)
        if not isinstance(value, str) or value not in valid:
            raise ValueError(f"{key}: unknown category {c!r}; valid: {', '.join(sorted(valid))}")
        out.add(value)
    return frozenset(out)


# The methods the recovery manager calls on a registered strategy: a subclass (or an instance)
# that shadows one with something not callable is refused at registration.
CALLED_METHODS = ("run", "execute", "is_applicable", "applies_to", "_eh_applicable", "_execute_impl")


def check_strategy(strategy: RecoveryStrategy, strategy_id: str) -> None:
    """At registration: the methods the manager calls are callable, the level is a
    RecoveryLevel, and the declared categories are known (normalized to strings)."""
    for name in CALLED_METHODS:
        attr = getattr(strategy, name, None)
        if not callable(attr):
            raise ValueError(
                f"strategy {strategy_id!r}: attribute {name!r} is {type(attr).__name__} {attr!r:.60}, not a method; "
                f"the recovery manager calls {name}(): rename the attribute in {type(strategy).__name__}")
    if not isinstance(getattr(strategy, "level", None), RecoveryLevel):
        raise ValueError(f"strategy {strategy_id!r}: level: expected a RecoveryLevel, got {strategy.level!r}")
    cats = getattr(strategy, "categories", None)
    if cats is not None:
        strategy.categories = normalize_categories(cats, f"strategy {strategy_id!r}: categories")


class NotApplicable(Exception):
    """Raised by ``_execute_impl`` when it finds its target does not exist: not a failure."""


class RecoveryStrategy:
    """Base class. Subclasses implement ``async _execute_impl(error_info) -> bool`` and may override
    ``is_applicable(error_info) -> bool``.

    ``_execute_impl`` returns True only once it verified that the symptom that started the
    recovery is gone, and raises :class:`NotApplicable` when it finds nothing to act on.

    ``categories`` declares the error categories (``ErrorCategory`` values) the strategy can act
    on; ``None`` (the default, so custom strategies see everything) means any. A strategy whose
    categories exclude an error's is neither run nor logged as a decision for it, and is not
    even asked ``is_applicable``. Subclasses set it on the class; ``categories=`` on the
    constructor, or assigning the attribute, overrides it for one instance.

    ``error_info`` is a fresh dict per run; a strategy may record what it touched in
    ``error_info["affected_tasks"]`` and ``error_info["recovered_tasks"]`` (lists of task ids) and
    anything else in ``error_info["details"]``.
    """

    strategy_id: str = ""
    categories: frozenset[str] | None = None
    # The keys of ``error_info`` that ``is_applicable`` reads, when it reads no others. The check
    # asked on every report then gets a dict of just these keys instead of the whole error_info.
    # None: any key. A subclass that overrides the check must declare again (see declared_reads).
    applicable_reads: ClassVar[frozenset[str] | None] = frozenset()
    # True when ``is_applicable`` answers from those keys alone (and from what the strategy was
    # built with, never from live state): the same values, the same answer. The check asked on
    # every report may then be answered from memory for a report that names no worker, task or
    # operation (see recovery.candidates). Inherited only together with the check (see declared_pure).
    applicable_pure: ClassVar[bool] = False

    def __init__(
        self, coordinator: Any, name: str, level: RecoveryLevel, categories: Iterable[Any] | None = None
    ) -> None:
        if not isinstance(level, RecoveryLevel):
            raise ValueError(f"level: expected a RecoveryLevel, got {level!r}")
        self.coordinator = coordinator
        self.name = name
        self.level = level
        # The base's bookkeeping is private: a subclass may use any public name for its own.
        self._eh_runs = 0
        self._eh_successes = 0
        if categories is not None:
            self.categories = normalize_categories(categories, "categories")

    def run_counts(self) -> dict[str, int]:
        """How often this strategy ran (not counting not-applicable looks) and succeeded."""
        return {"runs": self._eh_runs, "successes": self._eh_successes}

    def applies_to(self, category: str | None) -> bool:
        """Whether this strategy can act on errors of ``category`` at all (no I/O, no call out).
        Categories may be declared as ``ErrorCategory`` members or their string values."""
        cats = self.categories
        if cats is None or category is None:
            return True
        if category in cats:
            return True
        return any(getattr(c, "value", None) == category for c in cats)

    def is_applicable(self, error_info: dict[str, Any]) -> bool:
        return True

    async def _eh_applicable(self, error_info: dict[str, Any]) -> bool:
        """``applies_to`` the category and ``is_applicable`` (sync or async); a raising check is
        logged and counts as not applicable."""
        if not self.applies_to(error_info.get("category")):
            return False
        try:
            result = self.is_applicable(error_info)
            if inspect.isawaitable(result):
                result = await result
        except Exception:
            logger.exception("strategy %s: is_applicable failed", self.strategy_id or self.name)
            return False
        return bool(result)

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        raise NotImplementedError("recovery strategy implementation not provided")

    async def execute(self, error_info: dict[str, Any]) -> bool:
        """Seed-compatible: run and return True only on verified success."""
        return (await self.run(error_info)).success

    async def run(self, error_info: dict[str, Any], checked: bool = False) -> StrategyResult:
        """Run once: not_applicable, success, failure or error. Timeouts and cancellation propagate
        (the caller owns the timeout); the subclass's ``finally`` blocks restore what it changed.
        ``checked``: the caller already found it applicable (see :meth:`applicable`)."""
        info = dict(error_info)
        info.setdefault("affected_tasks", [])
        info.setdefault("recovered_tasks", [])
        info.setdefault("details", {})
        sid = self.strategy_id or self.name
        if not checked:
            if not self.applies_to(info.get("category")):
                return StrategyResult(sid, "not_applicable")
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
        self._eh_runs += 1
        try:
            ok = bool(await self._execute_impl(info))
            outcome, err = ("success" if ok else "failure"), None
        except (asyncio.CancelledError, TimeoutError):
            raise
        except NotApplicable as exc:
            self._eh_runs -= 1
            return StrategyResult(sid, "not_applicable", time.perf_counter() - start, error=str(exc) or None)
        except Exception as exc:
            logger.warning("strategy %s raised %r", sid, exc)
            outcome, err = "error", f"{type(exc).__name__}: {exc}"
        if outcome == "success":
            self._eh_successes += 1
        return StrategyResult(
            sid,
            outcome,
            time.perf_counter() - start,
            list(info["affected_tasks"]),
            list(info["recovered_tasks"]),
            dict(info["details"]),
            err,
        )


def declared_pure(strategy: RecoveryStrategy) -> bool:
    """Whether ``strategy.is_applicable`` is declared to depend on its declared keys alone; as for
    :func:`declared_reads`, the class that defines the check decides, and an instance given its
    own check is never pure."""
    if "is_applicable" in getattr(strategy, "__dict__", {}):
        return False
    for klass in type(strategy).__mro__:
        own = vars(klass)
        if "is_applicable" in own:
            return own.get("applicable_pure") is True
    return False


def declared_reads(strategy: RecoveryStrategy) -> frozenset[str] | None:
    """The keys ``strategy.is_applicable`` reads, or None when it may read any. The class nearest
    in the MRO that defines the check or a declaration decides: a subclass that overrides the
    check without declaring its keys (or an instance given its own check) may read any key."""
    if "is_applicable" in getattr(strategy, "__dict__", {}):
        return None
    for klass in type(strategy).__mro__:
        own = vars(klass)
        if "applicable_reads" in own:
            reads = own["applicable_reads"]
            return reads if isinstance(reads, frozenset) else None
        if "is_applicable" in own:
            return None
    return None
