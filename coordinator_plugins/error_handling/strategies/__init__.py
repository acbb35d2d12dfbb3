"""Recovery strategies: the base class (:mod:`.base`) and the five built-ins, one module each."""

from coordinator_plugins.error_handling.strategies.base import (
    LEVEL_STRATEGIES,
    OUTCOMES,
    NotApplicable,
    ProgressiveRecoveryLevel,
    RecoveryLevel,
    RecoveryStrategy,
    StrategyResult,
    declared_pure,
    declared_reads,
)
from coordinator_plugins.error_handling.strategies.coordinator import CoordinatorRecoveryStrategy
from coordinator_plugins.error_handling.strategies.database import DatabaseRecoveryStrategy
from coordinator_plugins.error_handling.strategies.retry import RetryStrategy
from coordinator_plugins.error_handling.strategies.system import SystemRecoveryStrategy
from coordinator_plugins.error_handling.strategies.worker import WorkerRecoveryStrategy

BUILTIN_CLASSES: dict[str, type[RecoveryStrategy]] = {
    "retry": RetryStrategy,
    "worker": WorkerRecoveryStrategy,
    "database": DatabaseRecoveryStrategy,
    "coordinator": CoordinatorRecoveryStrategy,
    "system": SystemRecoveryStrategy,
}

__all__ = [
    "BUILTIN_CLASSES",
    "LEVEL_STRATEGIES",
    "OUTCOMES",
    "CoordinatorRecoveryStrategy",
    "DatabaseRecoveryStrategy",
    "NotApplicable",
    "ProgressiveRecoveryLevel",
    "RecoveryLevel",
    "RecoveryStrategy",
    "RetryStrategy",
    "StrategyResult",
    "SystemRecoveryStrategy",
    "WorkerRecoveryStrategy",
    "declared_pure",
    "declared_reads",
]
