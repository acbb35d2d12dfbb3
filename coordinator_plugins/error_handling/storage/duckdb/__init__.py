"""The embedded store on DuckDB: :class:`DuckDBStore` (``store.py``) and the modules only it uses.

``store`` composes the parts; ``database`` is the one connection they share; ``queue``, ``writer``,
``lazy``, ``waits`` and ``batch`` write; ``reads``, ``queries``, ``analytics``, ``order`` and
``sortedkeys`` read; ``schema`` and ``migrations`` are the layout; ``recreate`` watches the file;
``seed`` converts a file the seed framework wrote; ``errors`` names DuckDB's exception classes for
the classifier and ``foreign`` checks a coordinator's own DuckDB connection.
"""

from coordinator_plugins.error_handling.storage.duckdb.store import DuckDBStore

__all__ = ["DuckDBStore"]
