"""The reference coordinator and worker: real processes talking HTTP."""

from coordinator_plugins.contract.protocol import CoordinatorProtocol
from coordinator_plugins.contract.seed_adapter import SeedCoordinatorAdapter
from coordinator_plugins.reference.app import (
    COORDINATOR_KEY,
    PLUGINS_KEY,
    build_app,
    serve,
    settings_from_config,
)
from coordinator_plugins.reference.coordinator import Component, Coordinator, CoordinatorSettings
from coordinator_plugins.reference.launcher import WorkerLauncher

__all__ = [
    "COORDINATOR_KEY",
    "PLUGINS_KEY",
    "Component",
    "Coordinator",
    "CoordinatorProtocol",
    "CoordinatorSettings",
    "SeedCoordinatorAdapter",
    "WorkerLauncher",
    "build_app",
    "serve",
    "settings_from_config",
]
