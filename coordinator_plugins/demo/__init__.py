"""The demo: a fault-injected farm that shows error handling recovering by itself."""

from __future__ import annotations

from typing import Any

__all__ = ["Demo", "run_demo"]


def __getattr__(name: str) -> Any:
    # Loaded on first use, so that ``coordinator_plugins.demo.kinds`` (read by the command line
    # of every worker process) does not import the whole farm.
    if name in __all__:
        from coordinator_plugins.demo import runner

        return getattr(runner, name)
    raise AttributeError(name)
