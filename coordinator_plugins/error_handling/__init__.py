"""The error-handling plugin: classify, group, persist, hook, recover, learn."""

from coordinator_plugins.error_handling.blocking import BlockingIntegration
from coordinator_plugins.error_handling.config import ErrorHandlingConfig, validate_config
from coordinator_plugins.error_handling.install import install_enhanced_error_handling, setup
from coordinator_plugins.error_handling.intake.retry import RetryPolicy
from coordinator_plugins.error_handling.integration import EnhancedErrorHandlingIntegration
from coordinator_plugins.error_handling.model import (
    ErrorCategory,
    ErrorContext,
    ErrorReport,
    ErrorSeverity,
    ErrorType,
)
from coordinator_plugins.error_handling.plugin import ERROR_HANDLING_KEY
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

__all__ = [
    "ERROR_HANDLING_KEY",
    "BlockingIntegration",
    "CoordinatorRecoveryStrategy",
    "DatabaseRecoveryStrategy",
    "DuckDBStore",
    "EnhancedErrorHandlingIntegration",
    "ErrorCategory",
    "ErrorContext",
    "ErrorHandlingConfig",
    "ErrorReport",
    "ErrorSeverity",
    "ErrorType",
    "NotApplicable",
    "ProgressiveRecoveryLevel",
    "RecoveryLevel",
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
