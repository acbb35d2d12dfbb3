"""coordinator_plugins: plugins for aiohttp coordinators of distributed test farms.

The first plugin is ``error_handling``. Coordinators enable plugins from their TOML config
and call :func:`load_plugins`.
"""

from coordinator_plugins.plugins import (
    PLUGIN_GROUP,
    available_plugins,
    load_config,
    load_plugins,
)

__all__ = ["PLUGIN_GROUP", "available_plugins", "load_config", "load_plugins"]
__version__ = "0.1.0"
