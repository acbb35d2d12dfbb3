"""Persistence: the ``Store`` protocol (``base.py``), the records that cross it (``records.py``),
``open_store`` (``factory.py``) and the DuckDB store. SQL lives here and nowhere else."""

from typing import Any

from coordinator_plugins.error_handling.storage.base import (
    SchemaTooNew,
    Store,
    StoreClosed,
    StoreError,
    StoreFull,
    StoreUnavailable,
)
from coordinator_plugins.error_handling.storage.factory import open_store, register_store
from coordinator_plugins.error_handling.storage.records import StoreStatus


def __getattr__(name: str) -> Any:
    # the DuckDB store on first use: importing it loads the seed migration, which classifies
    # with intake/, which imports this package
    if name == "DuckDBStore":
        from coordinator_plugins.error_handling.storage.duckdb_store import DuckDBStore

        return DuckDBStore
    raise AttributeError(name)


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
