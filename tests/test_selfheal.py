"""Issue 26 item 3: the DuckDB store heals itself. A database DuckDB invalidated (a checkpoint that
failed) is reopened as a new instance from its file; a full disk or a read-only data directory ends
by itself once the cause is gone; a client hears 503 (``may_be_stored``) meanwhile, not a 30 s hang;
big metadata is capped; a start that cannot write says so in one line."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import duckdb
import pytest

from conftest import wait_for
from coordinator_plugins.error_handling import DuckDBStore, EnhancedErrorHandlingIntegration, validate_config


def _poison(cur: duckdb.DuckDBPyConnection) -> None:
    """Make DuckDB invalidate the instance: its memory_limit lowered under what a checkpoint of
    big strings must pin (what 70 reports of 1 MB metadata did under the default 64 MB)."""
    cur.execute("CREATE TABLE ballast (s VARCHAR)")
    for _ in range(16):
        cur.execute("INSERT INTO ballast VALUES (?)", [os.urandom(500_000).hex()])
    cur.execute("SET memory_limit = '8MB'")
    with pytest.raises(duckdb.Error, match="(?i)checkpoint|pin"):
        cur.execute("CHECKPOINT")


async def test_an_invalidated_database_is_reopened_from_its_file(tmp_path: Path) -> None:
    # no timed reconnect: only the store's own reaction to the invalidation can bring it back
    cfg = validate_config({"database": str(tmp_path / "eh.duckdb"), "auto_recover": False})
    integ = EnhancedErrorHandlingIntegration(None, cfg)
    await integ.start()
    store = integ.store
    assert isinstance(store, DuckDBStore)
    store.auto_reconnect_after = 3600
    try:
        before, seq, _ = await integ.ingest("disk controller reset on shelf 3", {"component": "storage"})
        await store.wait_durable(seq, 10)
        await store.read(_poison)
        with pytest.raises(duckdb.Error, match="invalidated"):  # the instance is dead for every connection
            await store.read(lambda cur: cur.execute("SELECT 1").fetchall())
        after, seq, _ = await integ.ingest("fan failure on rack 9", {"component": "cooling"})
        await store.wait_durable(seq, 60)  # before the fix: "database has been invalidated" until a restart
        await wait_for(lambda: store.status().ok, 30, "the store healthy again")
        assert store.status().reconnects >= 1
        for report in (before, after):  # what was acknowledged is readable from the new instance
            group = await store.get_group(report.error_id)
            assert group is not None and group.aggregated_count == 1
    finally:
        await integ.stop()
