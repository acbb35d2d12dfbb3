"""The error-handling plugin: classify, group, persist, hook, recover, learn.

Every public name of the seed design (``SEED_DESIGN.md``) is here. The parts an integration is
built of keep the design's names for their types: ``DistributedErrorHandler`` is the type of
``integration.error_handler``, ``EnhancedErrorRecoveryManager`` of ``integration.recovery_manager``
and ``PerformanceBasedErrorRecovery`` of ``integration.performance_recovery``; they are built by
the integration (``install_enhanced_error_handling``), not by hand.
"""

from coordinator_plugins.error_handling.blocking import BlockingIntegration
from coordinator_plugins.error_handling.config import ErrorHandlingConfig, validate_config
from coordinator_plugins.error_handling.install import install_enhanced_error_handling, setup
from coordinator_plugins.error_handling.intake.handler import ErrorHandler
from coordinator_plugins.error_handling.intake.retry import RetryPolicy
from coordinator_plugins.error_handling.integration import EnhancedErrorHandlingIntegration
from coordinator_plugins.error_handling.learning.performance import PerformanceTracker
from coordinator_plugins.error_handling.learning.record import RecoveryPerformanceRecord
from coordinator_plugins.error_handling.model import (
    ErrorCategory,
    ErrorContext,
    ErrorReport,
    ErrorSeverity,
    ErrorType,
)
from coordinator_plugins.error_handling.plugin import ERROR_HANDLING_KEY
from coordinator_plugins.error_handling.recovery.manager import RecoveryManager
from coordinator_plugins.error_handling.storage.base import Store
from coordinator_plugins.error_handling.storage.duckdb import DuckDBStore
from coordinator_plugins.error_handling.strategies import (
    CoordinatorRecoveryStrategy,
    DatabaseRecoveryStrategy,
    NotApplicable,
    ProgressiveRecoveryLevel,
    RecoveryLevel,
    RecoveryStrategy,
    RetryStrategy,
    StrategyResult,
    SystemRecoveryStrategy,
    WorkerRecoveryStrategy,
)

# the seed design's names of the parts (see the docstring)
DistributedErrorHandler = ErrorHandler
EnhancedErrorRecoveryManager = RecoveryManager
PerformanceBasedErrorRecovery = PerformanceTracker

__all__ = [
    "ERROR_HANDLING_KEY",
    "BlockingIntegration",
    "CoordinatorRecoveryStrategy",
    "DatabaseRecoveryStrategy",
    "DistributedErrorHandler",
    "DuckDBStore",
    "EnhancedErrorHandlingIntegration",
    "EnhancedErrorRecoveryManager",
    "ErrorCategory",
    "ErrorContext",
    "ErrorHandlingConfig",
    "ErrorReport",
    "ErrorSeverity",
    "ErrorType",
    "NotApplicable",
    "PerformanceBasedErrorRecovery",
    "ProgressiveRecoveryLevel",
    "RecoveryLevel",
    "RecoveryPerformanceRecord",
    "RecoveryStrategy",
    "RetryPolicy",
    "RetryStrategy",
    "Store",
    "StrategyResult",
    "SystemRecoveryStrategy",
    "WorkerRecoveryStrategy",
    "install_enhanced_error_handling",
    "setup",
    "validate_config",
]
