"""The seed's ``enhanced_error_handling_integration`` module: the integration and its installer."""

from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration, install_enhanced_error_handling

__all__ = ["EnhancedErrorHandlingIntegration", "install_enhanced_error_handling"]
