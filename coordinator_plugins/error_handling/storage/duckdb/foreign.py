"""A coordinator's own DuckDB connection, as the seed adapter checks and reopens it (the seed
coordinator keeps one in ``coordinator.db``). Kept here so that no SQL and no driver import
live outside ``storage/``."""

from __future__ import annotations

from typing import Any

import duckdb


def connection_works(con: Any) -> bool:
    """True when a trivial query on ``con`` (a DuckDB connection) succeeds. Blocking."""
    try:
        con.execute("SELECT 1").fetchall()
        return True
    except Exception:
        return False


def reopen(path: str) -> Any:
    """A new connection to the DuckDB file at ``path``, checked with a query. Blocking; raises
    the driver's error when it cannot be opened."""
    con = duckdb.connect(path)
    try:
        con.execute("SELECT 1").fetchall()
    except BaseException:
        con.close()
        raise
    return con
