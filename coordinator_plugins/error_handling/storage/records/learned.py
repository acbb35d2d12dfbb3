"""What recovery learns and keeps, as it crosses the storage seam: strategy runs, recovery
levels, strategy scores, adaptive timeouts and a selection policy's own state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from coordinator_plugins.error_handling.model import utcnow


@dataclass(frozen=True, slots=True)
class StrategyRun:
    """One run of a recovery strategy (append-only)."""

    strategy_id: str
    strategy_name: str
    error_type: str
    execution_time: float
    success: bool
    affected_tasks: int = 0
    recovered_tasks: int = 0
    impact_score: float = 0.0
    stability_score: float = 1.0
    outcome: str = "success"
    error_id: str | None = None
    level: int = 1
    hardware_id: str | None = None
    resource_usage: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class LevelRecord:
    """A group's progressive-recovery level and the history of its recoveries."""

    error_id: str
    level: int
    updated_at: datetime
    history: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class StrategyScore:
    """What was learned of one (error key, strategy) pair: its score and its evidence."""

    key: str
    strategy_id: str
    score: float
    samples: int
    metrics: Mapping[str, Any]
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class TimeoutRecord:
    """An adaptive timeout of one (error type, strategy) pair."""

    error_type: str
    strategy_id: str
    timeout: float
    srtt: float = 0.0
    rttvar: float = 0.0
    samples: int = 0
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class LearnerRecord:
    """State a selection policy keeps of its own, under a key."""

    key: str
    state: Mapping[str, Any]
    updated_at: datetime = field(default_factory=utcnow)
