"""The seed's ``error_recovery_strategies`` module: the strategy interface, the built-in
strategies (same ids: ``retry``, ``worker``, ``database``, ``coordinator``, ``system``) and the
recovery manager (the type of ``integration.recovery_manager``)."""

from coordinator_plugins.error_handling import (
    CoordinatorRecoveryStrategy,
    DatabaseRecoveryStrategy,
    EnhancedErrorRecoveryManager,
    ErrorCategory,
    NotApplicable,
    RecoveryLevel,
    RecoveryStrategy,
    RetryStrategy,
    SystemRecoveryStrategy,
    WorkerRecoveryStrategy,
)

__all__ = ["CoordinatorRecoveryStrategy", "DatabaseRecoveryStrategy", "EnhancedErrorRecoveryManager", "ErrorCategory",
           "NotApplicable", "RecoveryLevel", "RecoveryStrategy", "RetryStrategy", "SystemRecoveryStrategy",
           "WorkerRecoveryStrategy"]
