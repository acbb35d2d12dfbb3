"""A DuckDB file the seed framework wrote: recognised, read, and rewritten in this store's layout.

A seed-written database has the seed's tables (``error_reports`` without ``fingerprint``,
``adaptive_timeouts`` without ``srtt``, ``recovery_performance`` without ``outcome``,
``error_relations``), no ``schema_version`` table, and error ids like ``err_<hex>``. The seed's
own ``schema_versions`` table and every table that is not one of the seed's six are left alone.

:func:`migrate_seed_database` converts one in a single transaction: it hands the seed's rows to
the store's seed hook (``storage/seedhook.py``: the domain decides what they become, in
``error_handling/seed/``), drops the six seed tables, creates the version-1 tables
(``schema.SCHEMA``), records schema version 1 and writes the hook's records with the store's own
statements (``batch.statements_for``, as one commit of its writer would), with the seed's ids
that were folded into a group as its aliases (``error_aliases``). Nothing is written when
anything fails, so the seed's file is never half-converted and never emptied. In a chain of
numbered migrations this is the step from "no ``schema_version``, seed tables" to version 1.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

import duckdb

from coordinator_plugins.error_handling.storage.base import StoreUnavailable
from coordinator_plugins.error_handling.storage.duckdb.batch import WriteBatch, run_statements, statements_for
from coordinator_plugins.error_handling.storage.duckdb.migrations import ALIASES, version_statements
from coordinator_plugins.error_handling.storage.duckdb.schema import (
    SCHEMA,
    dumps,
    learner_row,
    level_row,
    perf_row,
    score_row,
    timeout_row,
)
from coordinator_plugins.error_handling.storage.seedhook import SeedHook

logger = logging.getLogger(__name__)

SEED_TABLES = (
    "error_reports",
    "error_relations",
    "recovery_performance",
    "strategy_scores",
    "adaptive_timeouts",
    "progressive_recovery",
)
# The columns the seed wrote (SPEC 11; the seed's CREATE TABLE statements).
SEED_COLUMNS: dict[str, tuple[str, ...]] = {
    "error_reports": (
        "error_id", "error_type", "error_severity", "message", "component", "operation", "timestamp",
        "retry_count", "retry_successful", "aggregated_count", "resolution_status", "resolution_time",
        "resolution_strategy", "context_data", "recovery_details",
    ),
    "error_relations": ("error_id", "related_error_id", "relation_type"),
    "recovery_performance": (
        "id", "strategy_id", "strategy_name", "error_type", "execution_time", "success", "timestamp",
        "hardware_id", "affected_tasks", "recovered_tasks", "resource_usage", "impact_score",
        "stability_score", "context",
    ),
    "strategy_scores": ("error_type", "strategy_id", "score", "last_updated", "samples", "metrics"),
    "adaptive_timeouts": ("error_type", "strategy_id", "timeout", "last_updated"),
    "progressive_recovery": ("error_id", "current_level", "last_updated", "history"),
}
# Aliases written in one statement from four parallel lists (alias, group, relation, details JSON).
INSERT_ALIASES = (
    "INSERT INTO error_aliases SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
    "unnest(?::VARCHAR[])::JSON"
)
# A table in the seed's layout lacks the column that this plugin's version 1 added first.
_V1_ONLY = {"error_reports": "fingerprint", "recovery_performance": "outcome", "adaptive_timeouts": "srtt"}


# -- recognition -----------------------------------------------------------------------------------
def _tables(cur: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
    """table -> column -> data type, in the main schema of the open database."""
    rows = cur.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'main' AND table_catalog = current_database()"
    ).fetchall()
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for table, column, dtype in rows:
        out[str(table)][str(column).lower()] = str(dtype).upper()
    return dict(out)


def _seed_layout(table: str, columns: dict[str, str]) -> bool:
    if table == "error_relations":
        return True
    if table in _V1_ONLY:
        return _V1_ONLY[table] not in columns
    return columns.get("last_updated") != "TIMESTAMP WITH TIME ZONE"  # the seed wrote naive TIMESTAMPs


def seed_tables(cur: duckdb.DuckDBPyConnection) -> dict[str, set[str]] | None:
    """The tables in the seed's layout (with their columns) when the database was written by the
    seed code, else None: no ``schema_version`` table, and a seed table in the seed's layout."""
    tables = _tables(cur)
    if "schema_version" in tables:
        return None
    seed = {t: set(tables[t]) for t in SEED_TABLES if t in tables and _seed_layout(t, tables[t])}
    return seed if any(t in seed for t in (*_V1_ONLY, "error_relations")) else None


def is_seed_database(cur: duckdb.DuckDBPyConnection) -> bool:
    return seed_tables(cur) is not None


# -- reading and writing ------------------------------------------------------------------------------
class SeedTables:
    """The seed's tables of the open file, read through one cursor (a :class:`SeedSource`)."""

    def __init__(self, cur: duckdb.DuckDBPyConnection, present: dict[str, set[str]]) -> None:
        self._cur = cur
        self._present = present
        self._read: dict[str, int] = {}

    @property
    def tables(self) -> Mapping[str, set[str]]:
        return self._present

    @property
    def read(self) -> Mapping[str, int]:
        return self._read

    def rows(self, table: str) -> Iterator[dict[str, Any]]:
        """The seed's rows of ``table``, as dicts, a thousand at a time (a seed database may be
        large); each call is consumed before the next one starts, as one cursor requires."""
        cols = [c for c in SEED_COLUMNS.get(table, ()) if c in self._present.get(table, ())]
        if not cols:
            return
        self._read[table] = 0
        quoted = ", ".join(f'"{c}"' for c in cols)  # names from the catalog, never from input
        result = self._cur.execute(f'SELECT {quoted} FROM "{table}"')
        while chunk := result.fetchmany(1000):
            self._read[table] += len(chunk)
            for r in chunk:
                yield dict(zip(cols, r, strict=True))


def migrate_seed_database(
    con: duckdb.DuckDBPyConnection, convert: SeedHook | None, path: str = ""
) -> dict[str, Any] | None:
    """Convert a seed-written database to the version-1 layout in one transaction, with
    ``convert`` deciding what its rows become; None (and nothing done) when the database is not
    one. StoreUnavailable when it is one and there is no ``convert``; database errors propagate,
    with nothing written. The conversion's report."""
    present = seed_tables(con)
    if present is None:
        return None
    if convert is None:
        raise StoreUnavailable(
            f"error_handling.database: {path or 'the database'} was written by the seed framework and this store "
            "was given no seed conversion: open it with open_store(config), which converts it, or pass "
            "seed=coordinator_plugins.error_handling.seed.convert_seed"
        )
    logger.info("seed migration: converting a database the seed code wrote (tables %s)", ", ".join(present))
    done = convert(SeedTables(con, present))
    batch = WriteBatch()  # written by the store's own statements, as one commit of its writer would be
    for g in done.groups:  # new groups: each inserted with its whole count
        batch.add_group(g, g.aggregated_count)
    for o in done.occurrences:
        batch.add_occurrence(o, 0)
    batch.ops = [("perf", perf_row(run)) for run in done.runs]
    upserts: dict[str, dict[Any, tuple[Any, ...]]] = defaultdict(dict)
    for score in done.scores:
        upserts["score"][(score.key, score.strategy_id)] = score_row(score)
    for t in done.timeouts:
        upserts["timeout"][(t.error_type, t.strategy_id)] = timeout_row(t)
    for level in done.levels:
        upserts["level"][level.error_id] = level_row(level)
    for state in done.learner:
        upserts["learner"][state.key] = learner_row(state)
    batch.upserts = dict(upserts)
    statements, big = statements_for(batch, [(g, batch.deltas[gid], None) for gid, g in batch.groups.items()], [])
    drops: list[tuple[str, Any]] = [(f'DROP TABLE "{t}"', None) for t in present]
    aliases: list[tuple[str, Any]] = [(ALIASES, None)]  # (version 3's table, ahead of the steps that follow)
    if done.aliases:
        aliases.append((INSERT_ALIASES, [
            [a.alias_id for a in done.aliases], [a.error_id for a in done.aliases],
            [a.relation for a in done.aliases], [dumps(dict(a.details or {})) for a in done.aliases]]))
    run_statements(con, [*drops, (SCHEMA, None), *version_statements(1), *aliases, *statements], big)
    logger.info("seed migration: done: %s", done.summary or f"{len(done.groups)} group(s)")
    return done.report
