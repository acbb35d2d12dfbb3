"""Observing the plugin: Prometheus metrics, diagnostics and explanations, the resource sampler."""
