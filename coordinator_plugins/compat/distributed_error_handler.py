"""The seed's ``distributed_error_handler`` module: classification, reports and retry policies.

``DistributedErrorHandler`` is the type of ``integration.error_handler`` (built by the
integration: ``install_enhanced_error_handling``); reports are made with
``await integration.report_error(error, context)``.
"""

from coordinator_plugins.error_handling import (
    DistributedErrorHandler,
    ErrorCategory,
    ErrorContext,
    ErrorReport,
    ErrorSeverity,
    ErrorType,
    RetryPolicy,
)

__all__ = ["DistributedErrorHandler", "ErrorCategory", "ErrorContext", "ErrorReport", "ErrorSeverity", "ErrorType",
           "RetryPolicy"]
