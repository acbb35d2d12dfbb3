"""Versioned migrations of the DuckDB layout.

The ``schema_version`` table holds one row: the version of the layout the file has. Each
migration is a numbered step from the version before it; :func:`migrate` applies the steps a
file lacks, all in one transaction with the new version number, so a file is at one version or
the next, never between. A file newer than the code is refused (``SchemaTooNew``): the code
cannot know what the newer layout means.

Versions:

- 0: no ``schema_version`` table. An empty file, or the layout of the releases before versioned
  migrations (their tables are exactly those of version 1, created by ``CREATE ... IF NOT
  EXISTS`` on every connect).
- 1: the layout of ``schema.SCHEMA``, and ``schema_version``. A file the seed framework wrote
  is converted to it by ``seed.py`` (with the seed hook the store was given) before the steps run.
- 2: an index on ``error_reports.fingerprint``: a group evicted from memory (or not loaded at
  startup) is found by its fingerprint when it recurs, so grouping stays exact past
  ``max_groups_in_memory``.
- 3: ``error_aliases``: the other ids of a group (a seed error folded into a group on migration
  keeps answering under its own id).
- 4: ``idempotency_keys``: the idempotency key of a report (``Idempotency-Key`` or ``event_id``)
  with the answer it got, written with its occurrence, so that a retry is counted once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from coordinator_plugins.error_handling.storage.base import SchemaTooNew
from coordinator_plugins.error_handling.storage.duckdb.idempotency import TABLE as IDEMPOTENCY_KEYS
from coordinator_plugins.error_handling.storage.duckdb.schema import SCHEMA

logger = logging.getLogger(__name__)


# Version 3: the other ids of a group (the seed's errors folded into it on migration).
ALIASES = """
CREATE TABLE IF NOT EXISTS error_aliases (
    alias_id VARCHAR PRIMARY KEY,
    error_id VARCHAR NOT NULL,
    relation VARCHAR,
    details JSON
)"""

@dataclass(frozen=True, slots=True)
class Migration:
    """Step to ``version`` from ``version - 1``: statements run in order."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the tables of version 1 (the releases before versioned migrations had the same)", (SCHEMA,)),
    Migration(2, "an index on the fingerprint of error groups (exact grouping past the memory cap)",
              ("CREATE INDEX IF NOT EXISTS error_reports_fingerprint ON error_reports (fingerprint)",)),
    Migration(3, "the other ids of a group (seed errors folded into it keep answering)", (ALIASES,)),
    Migration(4, "the idempotency keys of reports (a retried report is counted once)", (IDEMPOTENCY_KEYS,)),
)
CURRENT_VERSION = MIGRATIONS[-1].version

_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TIMESTAMPTZ)"


def version_statements(version: int) -> list[tuple[str, list[object] | None]]:
    """The statements that record ``version`` (in the caller's transaction)."""
    return [
        (_VERSION_TABLE, None),
        ("DELETE FROM schema_version", None),
        ("INSERT INTO schema_version VALUES (?, now())", [version]),
    ]


def stored_version(con: duckdb.DuckDBPyConnection) -> int:
    """The version a file has; 0 when it has no ``schema_version`` table."""
    has = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version' "
        "AND table_catalog = current_database() AND table_schema = 'main'"
    ).fetchone()
    if not has or not has[0]:
        return 0
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(
    con: duckdb.DuckDBPyConnection, path: str = "", migrations: Sequence[Migration] = MIGRATIONS
) -> tuple[int, int]:
    """Bring the file to the last of ``migrations``; (version before, version after).
    SchemaTooNew for a file newer than them; a failing step leaves the file as it was."""
    current = migrations[-1].version
    found = stored_version(con)
    if found > current:
        raise SchemaTooNew(
            f"error_handling.database: {path or 'the database'} has schema version {found}, newer than this "
            f"version of the plugin understands ({current}); upgrade the plugin or use another file"
        )
    steps = [m for m in migrations if m.version > found]
    if not steps:
        return found, found
    con.execute("BEGIN TRANSACTION")
    try:
        for step in steps:
            for sql in step.statements:
                con.execute(sql)
        for sql, params in version_statements(current):
            con.execute(sql, params)
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        raise
    if found:
        logger.info("store: migrated %s from schema version %d to %d", path or "the database", found, current)
    return found, current
