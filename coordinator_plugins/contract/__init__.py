"""The coordinator contract: what recovery acts through.

The plugin depends on this package only, never on the reference coordinator, which implements
the contract and re-exports it. A coordinator shaped like the seed framework's is wrapped in
:class:`SeedCoordinatorAdapter`.
"""

from coordinator_plugins.contract.protocol import CoordinatorProtocol
from coordinator_plugins.contract.seed_adapter import SeedCoordinatorAdapter

__all__ = ["CoordinatorProtocol", "SeedCoordinatorAdapter"]
