"""The PostgreSQL store (SPEC section 10): :class:`PostgresStore` (``store.py``), and the modules
only it uses: ``pool`` (its connections), ``writer``, ``reads``, ``fleet`` (what a fleet of
coordinators shares) and ``schema``. Imported only when a ``postgresql://`` URL asks for it."""

from coordinator_plugins.error_handling.storage.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
