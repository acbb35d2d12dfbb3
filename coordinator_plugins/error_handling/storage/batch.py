"""A batch of writes gathered between two commits, and the statements that commit it.

Each DuckDB call made by the writer thread must win the GIL back from the event loop's thread,
so a batch becomes as few statements as possible: occurrences in one INSERT (the appender only
for large batches), and a single statement runs in autocommit, which is atomic, without
BEGIN/COMMIT.
"""

from __future__ import annotations

import time
from typing import Any

import duckdb

from coordinator_plugins.error_handling.model import ErrorReport
from coordinator_plugins.error_handling.storage.schema import (
    GROUP_COLUMNS,
    INSERT_OCCURRENCES,
    INSERT_PERF,
    PERF_COLUMNS,
    UPDATE_COLUMNS,
    UPDATE_GROUPS,
    UPSERT_GROUPS,
    UPSERTS,
    columns_of,
    dumps,
    group_row,
    update_row,
)

CHUNK = 1000
SMALL_BATCH = 2000
# The occurrence columns a batch keeps, in the order of INSERT_OCCURRENCES and of the table.
OCC_COLUMNS = ("occ_id", "occ_ts", "occ_msg", "occ_worker", "occ_task", "occ_hw", "occ_md")


def chunks(rows: list[Any], size: int = CHUNK) -> Any:
    """Yield slices of ``rows``, releasing the GIL between them: converting a large parameter
    list holds the GIL inside DuckDB, and the event loop's thread must not wait on it for long."""
    for i in range(0, len(rows), size):
        if i:
            time.sleep(0)
        yield rows[i : i + size]


class Batch:
    """Writes gathered between two commits."""

    __slots__ = (
        "groups",
        "occ_hw",
        "occ_id",
        "occ_md",
        "occ_msg",
        "occ_task",
        "occ_ts",
        "occ_worker",
        "ops",
        "seq",
        "upserts",
    )

    def __init__(self) -> None:
        self.seq = 0
        self.occ_id: list[str] = []
        self.occ_ts: list[Any] = []
        self.occ_msg: list[str] = []
        self.occ_worker: list[str | None] = []
        self.occ_task: list[str | None] = []
        self.occ_hw: list[str | None] = []
        self.occ_md: list[dict[str, Any] | None] = []
        self.groups: dict[str, ErrorReport] = {}
        self.upserts: dict[str, dict[Any, tuple[Any, ...]]] = {}
        self.ops: list[tuple[str, Any]] = []

    def size(self) -> int:
        return len(self.occ_id) + len(self.groups) + len(self.ops) + sum(len(v) for v in self.upserts.values())

    def absorb(self, newer: Batch) -> None:
        for name in (*OCC_COLUMNS, "ops"):
            getattr(self, name).extend(getattr(newer, name))
        self.groups.update(newer.groups)
        for kind, rows in newer.upserts.items():
            self.upserts.setdefault(kind, {}).update(rows)
        self.seq = newer.seq


def occurrence_columns(batch: Batch) -> list[list[Any]]:
    """The batch's occurrences column by column, metadata serialized, ready to be written."""
    md = [dumps(m) if m else None for m in batch.occ_md]
    return [batch.occ_id, batch.occ_ts, batch.occ_msg, batch.occ_worker, batch.occ_task, batch.occ_hw, md]


def occurrence_rows(batch: Batch) -> list[tuple[Any, ...]]:
    return list(zip(*occurrence_columns(batch), strict=True))


def statements_for(
    batch: Batch, written: list[ErrorReport], known: list[ErrorReport]
) -> tuple[list[tuple[str, Any]], list[tuple[Any, ...]]]:
    """(statements, rows for the appender) that commit ``batch``, new groups ``written`` in full and
    the rows of ``known`` groups updated."""
    statements: list[tuple[str, Any]] = []
    for part in chunks(written):
        statements.append((UPSERT_GROUPS, columns_of([group_row(r) for r in part], len(GROUP_COLUMNS))))
    for part in chunks(known):
        statements.append((UPDATE_GROUPS, columns_of([update_row(r) for r in part], len(UPDATE_COLUMNS))))
    big: list[tuple[Any, ...]] = []
    if batch.occ_id:
        if len(batch.occ_id) <= SMALL_BATCH:
            statements.append((INSERT_OCCURRENCES, occurrence_columns(batch)))
        else:
            big = occurrence_rows(batch)
    perfs = [p for k, p in batch.ops if k == "perf"]
    if perfs:
        statements.append((INSERT_PERF, columns_of(perfs, len(PERF_COLUMNS))))
    for kind, by_key in batch.upserts.items():
        rows = list(by_key.values())
        statements.append((UPSERTS[kind], columns_of(rows, len(rows[0]))))
    statements.extend(payload for kind, payload in batch.ops if kind == "sql")
    return statements, big


def run_statements(
    cur: duckdb.DuckDBPyConnection, statements: list[tuple[str, Any]], big: list[tuple[Any, ...]]
) -> None:
    """Commit them atomically: one statement in autocommit, several in one transaction."""
    if len(statements) == 1 and not big:
        cur.execute(*statements[0])
        return
    if not statements and not big:
        return
    cur.execute("BEGIN TRANSACTION")
    try:
        for sql, params in statements:
            cur.execute(sql, params)
        if big:
            app = cur.appender("error_occurrences")
            for part in chunks(big, 2000):
                app.append_rows(part)
            app.flush()
        cur.execute("COMMIT")
    except BaseException:
        try:
            cur.execute("ROLLBACK")
        except Exception:
            pass
        raise
