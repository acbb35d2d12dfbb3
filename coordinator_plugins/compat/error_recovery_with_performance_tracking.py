"""The seed's ``error_recovery_with_performance_tracking`` module: the record of one strategy run,
the progressive levels, and the performance tracker (the type of
``integration.performance_recovery``)."""

from coordinator_plugins.error_handling import (
    PerformanceBasedErrorRecovery,
    ProgressiveRecoveryLevel,
    RecoveryPerformanceRecord,
)

__all__ = ["PerformanceBasedErrorRecovery", "ProgressiveRecoveryLevel", "RecoveryPerformanceRecord"]
