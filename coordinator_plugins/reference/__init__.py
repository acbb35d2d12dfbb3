"""The reference coordinator and worker: real processes talking HTTP."""

from coordinator_plugins.contract.protocol import CoordinatorProtocol
from coordinator_plugins.contract.seed_adapter import SeedCoordinatorAdapter
from coordinator_plugins.reference.app import COORDINATOR_KEY, PLUGINS_KEY, SECURITY_KEY, build_app
from coordinator_plugins.reference.coordinator import Component, Coordinator
from coordinator_plugins.reference.launcher import WorkerLauncher
from coordinator_plugins.reference.security import SecuritySettings
from coordinator_plugins.reference.serving import serve
from coordinator_plugins.reference.settings import CoordinatorSettings, settings_from_config

__all__ = [
    "COORDINATOR_KEY",
    "PLUGINS_KEY",
    "SECURITY_KEY",
    "Component",
    "Coordinator",
    "CoordinatorProtocol",
    "CoordinatorSettings",
    "SecuritySettings",
    "SeedCoordinatorAdapter",
    "WorkerLauncher",
    "build_app",
    "serve",
    "settings_from_config",
]
