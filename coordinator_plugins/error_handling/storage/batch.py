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
    """Writes gathered between two commits, each with the write number (seq) that queued it, so
    that a write the database refuses fails its own waiter and no other (see WriterLoop._salvage)."""

    __slots__ = (
        "group_seq",
        "groups",
        "occ_hw",
        "occ_id",
        "occ_md",
        "occ_msg",
        "occ_seq",
        "occ_task",
        "occ_ts",
        "occ_worker",
        "ops",
        "ops_seq",
        "seq",
        "upsert_seq",
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
        self.occ_seq: list[int] = []  # the seq of each occurrence
        self.groups: dict[str, ErrorReport] = {}
        self.group_seq: dict[str, list[int]] = {}  # seqs of enqueue_group calls, by group
        self.upserts: dict[str, dict[Any, tuple[Any, ...]]] = {}
        self.upsert_seq: dict[tuple[str, Any], list[int]] = {}
        self.ops: list[tuple[str, Any]] = []
        self.ops_seq: list[int] = []

    def size(self) -> int:
        return len(self.occ_id) + len(self.groups) + len(self.ops) + sum(len(v) for v in self.upserts.values())

    def absorb(self, newer: Batch) -> None:
        for name in (*OCC_COLUMNS, "occ_seq", "ops", "ops_seq"):
            getattr(self, name).extend(getattr(newer, name))
        self.groups.update(newer.groups)
        for gid, seqs in newer.group_seq.items():
            self.group_seq.setdefault(gid, []).extend(seqs)
        for kind, rows in newer.upserts.items():
            self.upserts.setdefault(kind, {}).update(rows)
        for key, seqs in newer.upsert_seq.items():
            self.upsert_seq.setdefault(key, []).extend(seqs)
        self.seq = max(self.seq, newer.seq)

    def seqs(self) -> list[int]:
        """Every write number this batch carries."""
        out = list(self.occ_seq) + list(self.ops_seq)
        for seqs in (*self.group_seq.values(), *self.upsert_seq.values()):
            out.extend(seqs)
        return out

    def units(self) -> list[Batch]:
        """The batch in its smallest independent parts: each group with its own occurrences, each
        upsert, each operation. A part's rows stand or fall together; no part needs another."""
        out: list[Batch] = []
        by_group: dict[str, list[int]] = {}
        for i, gid in enumerate(self.occ_id):
            by_group.setdefault(gid, []).append(i)
        for gid in {**dict.fromkeys(self.groups), **dict.fromkeys(by_group)}:
            u = Batch()
            for i in by_group.get(gid, ()):
                for name in (*OCC_COLUMNS, "occ_seq"):
                    getattr(u, name).append(getattr(self, name)[i])
            if gid in self.groups:
                u.groups[gid] = self.groups[gid]
            if gid in self.group_seq:
                u.group_seq[gid] = list(self.group_seq[gid])
            u.seq = self.seq
            out.append(u)
        for kind, by_key in self.upserts.items():
            for key, row in by_key.items():
                u = Batch()
                u.upserts = {kind: {key: row}}
                u.upsert_seq = {(kind, key): list(self.upsert_seq.get((kind, key), ()))}
                u.seq = self.seq
                out.append(u)
        op_seqs = self.ops_seq + [0] * (len(self.ops) - len(self.ops_seq))  # 0: nobody waits on it
        for op, seq in zip(self.ops, op_seqs, strict=True):
            u = Batch()
            u.ops, u.ops_seq, u.seq = [op], [seq], self.seq
            out.append(u)
        return out

    @staticmethod
    def merged(parts: list[Batch]) -> Batch:
        b = Batch()
        for p in parts:
            b.absorb(p)
        return b


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
