"""Which store a configuration asks for: ``open_store(config)``.

``database`` is a file path (or ``:memory:``) for the embedded DuckDB store, or a URL whose
scheme names another store. Each scheme maps to a factory in ``STORE_FACTORIES``; a store
module registers itself there with :func:`register_store` (or by adding its line below).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from coordinator_plugins.error_handling.storage.base import Store
from coordinator_plugins.error_handling.storage.duckdb import DuckDBStore
from coordinator_plugins.error_handling.storage.seedhook import SeedHook

if TYPE_CHECKING:
    from coordinator_plugins.error_handling.config import ErrorHandlingConfig

OnError = Callable[[BaseException], None]
StoreFactory = Callable[["ErrorHandlingConfig", "OnError | None"], Store]


def _duckdb(
    config: ErrorHandlingConfig, on_error: OnError | None, seed: SeedHook | None, host_path: str | None
) -> Store:
    return DuckDBStore(
        config.database,
        host_path=host_path,
        queue_limit=config.write_queue_limit,
        on_error=on_error,
        gather=config.commit_window,
        memory_mb=config.database_memory_mb,
        fallback_to_memory=config.fallback_to_memory,
        seed=seed,
    )


def _postgres(config: ErrorHandlingConfig, on_error: OnError | None) -> Store:
    # imported on first use: the driver is loaded only when a postgresql:// URL asks for it
    from coordinator_plugins.error_handling.storage.postgres import PostgresStore

    return PostgresStore(
        config.database,
        coordinator_id=config.coordinator_id,
        queue_limit=config.write_queue_limit,
        on_error=on_error,
    )


# scheme -> factory. The registration point for further stores.
STORE_FACTORIES: dict[str, StoreFactory] = {
    "postgresql": _postgres,
    "postgres": _postgres,
}


def register_store(scheme: str, factory: StoreFactory) -> None:
    """Serve ``database`` URLs of ``scheme`` (``scheme://...``) with ``factory(config, on_error)``."""
    STORE_FACTORIES[scheme.lower()] = factory


def scheme_of(database: str) -> str | None:
    """The URL scheme of ``database`` (``postgresql`` of ``postgresql://...``), None for a path."""
    head, sep, _ = database.partition("://")
    if not sep or not head or not head.replace("+", "").replace("-", "").isalnum() or len(head) == 1:
        return None  # a path (a Windows drive letter is one character)
    return head.lower()


def open_store(
    config: ErrorHandlingConfig, on_error: OnError | None = None, seed: SeedHook | None = None,
    host_path: str | None = None,
) -> Store:
    """The store ``config.database`` names, not yet opened (``await store.open()`` connects).
    ``on_error`` is called on the loop when the store's writes start failing; ``seed`` converts
    a DuckDB file the seed framework wrote (``error_handling.seed.convert_seed``; without it such
    a file is refused). ValueError naming ``database`` for a URL scheme no store serves, and for
    a DuckDB file that the host has open or names as its own (``host_path``: see duckdb/held.py)."""
    scheme = scheme_of(config.database)
    if scheme is None:
        return _duckdb(config, on_error, seed, host_path)
    factory = STORE_FACTORIES.get(scheme)
    if factory is None:
        known = ", ".join(sorted(STORE_FACTORIES)) or "none"
        raise ValueError(f"database: no store serves {scheme}:// URLs (known: {known}; or give a file path)")
    return factory(config, on_error)
