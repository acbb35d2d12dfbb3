"""Persistence: the ``Store`` protocol (``base.py``), the records that cross it (``records/``),
``open_store`` (``factory.py``, which picks a backend by the ``database`` URL's scheme), what
both backends share (``sqlshared``, ``durability``, ``health``, ``seedhook``), and one folder
per backend: ``duckdb/`` (the embedded store, the default) and ``postgres/`` (a fleet's). SQL and
database drivers live here and nowhere else; nothing here imports the plugin's other parts
(``model`` aside)."""

from coordinator_plugins.error_handling.storage.base import (
    SchemaTooNew,
    Store,
    StoreClosed,
    StoreError,
    StoreFull,
    StoreUnavailable,
)
from coordinator_plugins.error_handling.storage.duckdb import DuckDBStore
from coordinator_plugins.error_handling.storage.factory import open_store, register_store
from coordinator_plugins.error_handling.storage.records import StoreStatus

__all__ = [
    "DuckDBStore",
    "SchemaTooNew",
    "Store",
    "StoreClosed",
    "StoreError",
    "StoreFull",
    "StoreStatus",
    "StoreUnavailable",
    "open_store",
    "register_store",
]
