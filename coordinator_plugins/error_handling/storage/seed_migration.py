"""Open a DuckDB file that the seed framework wrote: convert it, in place, to the version-1 layout.

A seed-written database has the seed's tables (``error_reports`` without ``fingerprint``,
``adaptive_timeouts`` without ``srtt``, ``recovery_performance`` without ``outcome``,
``error_relations``), no ``schema_version`` table, and error ids like ``err_<hex>``. The seed's
own ``schema_versions`` table and every table that is not one of the seed's six are left alone.

:func:`migrate_seed_database` converts one in a single transaction: it reads every seed row,
turns them into what this plugin keeps, drops the six seed tables, creates the version-1 tables
(``schema.SCHEMA``), records schema version 1 and writes the rows with the store's own statements. Nothing is written
when anything fails, so the seed's file is never half-converted and never emptied. A row that
cannot be migrated (no id, no strategy, no outcome) is skipped, logged and counted; a JSON value
that does not parse is dropped from its row, which is kept, and counted as repaired.

What becomes of the rows:

- ``error_reports``: each open, retrying or failed error becomes an open group with the same
  ``error_id``, count and status; open errors that this plugin's fingerprint (computed with
  ``intake.group.fingerprint`` on this plugin's classification) finds to be the same error are one
  group, under the id of the seed's primary (the error the seed aggregated the others into,
  else the earliest), counting them all, so new occurrences join it. Resolved errors stay
  resolved groups of their own. Workers and tasks come from ``related_entities``. Every row is
  also an occurrence of its group; the seed's timestamps (naive local time) become UTC.
- ``error_relations`` folds into the groups: aggregated errors into their primary's group,
  other relations into ``recovery_details.related_errors``.
- ``recovery_performance`` rows are kept (with an ``outcome`` and a level from their context)
  and replayed in time order through this plugin's learners: they are the strategy evidence,
  the adaptive timeouts (the seed's last timeout is the starting point) and the learned start
  levels. A ``strategy_scores`` row without records becomes evidence from its summary.
- ``progressive_recovery`` levels are kept (a resolved group's level is 1, as here).

The report of a migration is stored under ``learner_state`` key ``migration:seed``.

The layout written is the one of ``schema.SCHEMA`` and of the store's own write statements
(``batch.statements_for``): today that is version 1. In a chain of numbered migrations this is
the step from "no ``schema_version``, seed tables" to that version.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import duckdb

from coordinator_plugins.error_handling.model import iso, utcnow
from coordinator_plugins.error_handling.storage.batch import Batch, run_statements, statements_for
from coordinator_plugins.error_handling.storage.migrations import version_statements
from coordinator_plugins.error_handling.storage.records import GroupRecord
from coordinator_plugins.error_handling.storage.schema import SCHEMA
from coordinator_plugins.error_handling.storage.seed_errors import fold_relations, groups_of, levels_of
from coordinator_plugins.error_handling.storage.seed_learned import learn, performance_rows
from coordinator_plugins.error_handling.storage.seed_values import SeedMigrationReport

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


# -- the migration ------------------------------------------------------------------------------------
def _rows(
    cur: duckdb.DuckDBPyConnection, table: str, present: dict[str, set[str]], report: SeedMigrationReport
) -> Iterator[dict[str, Any]]:
    """The seed's rows of ``table``, as dicts, a thousand at a time (a seed database may be large);
    each call is consumed before the next one starts, as one cursor requires."""
    cols = [c for c in SEED_COLUMNS[table] if c in present.get(table, ())]
    if not cols:
        return
    report.read[table] = 0
    quoted = ", ".join(f'"{c}"' for c in cols)  # names from the catalog, never from input
    result = cur.execute(f'SELECT {quoted} FROM "{table}"')
    while chunk := result.fetchmany(1000):
        report.read[table] += len(chunk)
        for r in chunk:
            yield dict(zip(cols, r, strict=True))


def migrate_seed_database(con: duckdb.DuckDBPyConnection) -> SeedMigrationReport | None:
    """Convert a seed-written database to the version-1 layout in one transaction; None (and
    nothing done) when the database is not one. Database errors propagate, with nothing written."""
    present = seed_tables(con)
    if present is None:
        return None
    report = SeedMigrationReport(migrated_at=iso(utcnow()) or "")
    logger.info("seed migration: converting a database the seed code wrote (tables %s)", ", ".join(present))

    def rows(table: str) -> Iterator[dict[str, Any]]:
        return _rows(con, table, present, report)

    relations = list(rows("error_relations"))
    groups, group_of, occurrences = groups_of(rows("error_reports"), relations, report)
    by_id = {g.error_id: g for g in groups}
    fold_relations(relations, by_id, group_of, report)
    perf_rows = performance_rows(rows("recovery_performance"), group_of, report)
    cap = learn(perf_rows, list(rows("strategy_scores")), list(rows("adaptive_timeouts")), report)
    cap.rows["level"].update(levels_of(rows("progressive_recovery"), by_id, group_of, report))
    report.groups = len(groups)
    report.open_groups = sum(1 for g in groups if g.is_open)
    cap("learner", "migration:seed", ("migration:seed", json.dumps(report.to_dict()), utcnow()))
    batch = Batch()  # written by the store's own statements, as one commit of its writer would be
    for g in groups:  # new groups: each inserted with its whole count
        batch.add_group(GroupRecord.of(g), g.aggregated_count)
    if occurrences:
        columns = [list(c) for c in zip(*occurrences, strict=True)]
        (batch.occ_id, batch.occ_ts, batch.occ_msg, batch.occ_worker, batch.occ_task, batch.occ_hw,
         batch.occ_md) = columns
    batch.ops = [("perf", row) for row in perf_rows]
    batch.upserts = {kind: rows for kind, rows in cap.rows.items() if rows}
    statements, big = statements_for(batch, [(g, batch.deltas[gid], None) for gid, g in batch.groups.items()], [])
    drops: list[tuple[str, Any]] = [(f'DROP TABLE "{t}"', None) for t in present]
    run_statements(con, [*drops, (SCHEMA, None), *version_statements(1), *statements], big)
    logger.info("seed migration: done: %d group(s) (%d open, %d seed error(s) merged into them), "
                "%d performance record(s), %d row(s) skipped, %d value(s) repaired",
                report.groups, report.open_groups, report.merged_errors, len(perf_rows),
                sum(report.skipped.values()), report.repaired)
    return report
