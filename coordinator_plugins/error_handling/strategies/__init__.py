"""Recovery strategies: the base class and the five built-ins."""

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
from coordinator_plugins.error_handling.strategies.builtin import (
    BUILTIN_CLASSES,
    CoordinatorRecoveryStrategy,
    DatabaseRecoveryStrategy,
    RetryStrategy,
    SystemRecoveryStrategy,
    WorkerRecoveryStrategy,
)

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
