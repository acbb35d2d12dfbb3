"""The demo: a fault-injected farm that shows error handling recovering by itself."""

from coordinator_plugins.demo.runner import Demo, run_demo

__all__ = ["Demo", "run_demo"]
