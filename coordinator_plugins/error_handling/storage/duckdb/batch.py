"""A batch of writes gathered between two commits, and the statements that commit it.

Each DuckDB call made by the writer thread must win the GIL back from the event loop's thread,
so a batch becomes as few statements as possible: occurrences in one INSERT (the appender only
for large batches), and a single statement runs in autocommit, which is atomic, without
BEGIN/COMMIT.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import duckdb

from coordinator_plugins.error_handling.storage.duckdb.idempotency import EXPIRE as EXPIRE_KEYS
from coordinator_plugins.error_handling.storage.duckdb.schema import (
    COUNT_GROUPS,
    GROUP_COLUMNS,
    INSERT_GROUPS,
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
from coordinator_plugins.error_handling.storage.records import GroupRecord, OccurrenceRecord

# Rows per DuckDB call. Converting a call's Python parameters holds the GIL, so the event loop's
# thread waits for the whole conversion. Measured on the project's 2-core VM: occurrence rows
# held it 7-8 ms per 2,000 (an INSERT's column lists or the appender), 2.3-3 ms per 500; group
# rows (13-20 columns) 6-13 ms per 1,000, about 3 ms per 250. The loop's p99 lag goal is 5 ms.
# Smaller parts cost more calls, each a hand-over of the GIL: these are the largest that fit.
CHUNK = 250  # group rows per statement
SMALL_BATCH = 500  # occurrences in one INSERT; more go through the appender, APPEND_PART at a time
APPEND_PART = 500
# The occurrence columns a batch keeps, in the order of INSERT_OCCURRENCES and of the table.
OCC_COLUMNS = ("occ_id", "occ_ts", "occ_msg", "occ_worker", "occ_task", "occ_hw", "occ_md")


def chunks(rows: list[Any], size: int = CHUNK) -> Any:
    """Yield slices of ``rows``, releasing the GIL between them: converting a large parameter
    list holds the GIL inside DuckDB, and the event loop's thread must not wait on it for long."""
    for i in range(0, len(rows), size):
        if i:
            time.sleep(0)
        yield rows[i : i + size]


class WriteBatch:
    """Writes gathered between two commits, each with the write number (seq) that queued it, so
    that a write the database refuses fails its own waiter and no other (see Writer.salvage)."""

    __slots__ = (
        "deltas",
        "group_seq",
        "groups",
        "new",
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
        "seen",
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
        self.occ_md: list[Mapping[str, Any] | None] = []
        self.occ_seq: list[int] = []  # the seq of each occurrence
        # the latest snapshot of each group written, the occurrences it gained since its previous
        # write (its count increment), and the ids of groups the store has never written
        self.groups: dict[str, GroupRecord] = {}
        self.deltas: dict[str, int] = {}
        self.seen: dict[str, datetime] = {}  # the latest occurrence of each group counted here
        self.new: set[str] = set()
        self.group_seq: dict[str, list[int]] = {}  # seqs of the group's counts and snapshots
        self.upserts: dict[str, dict[Any, tuple[Any, ...]]] = {}
        self.upsert_seq: dict[tuple[str, Any], list[int]] = {}
        self.ops: list[tuple[str, Any]] = []
        self.ops_seq: list[int] = []

    def add_occurrence(self, o: OccurrenceRecord, seq: int) -> None:
        self.occ_seq.append(seq)
        self.occ_id.append(o.error_id)
        self.occ_ts.append(o.occurred_at)
        self.occ_msg.append(o.message)
        self.occ_worker.append(o.worker_id)
        self.occ_task.append(o.task_id)
        self.occ_hw.append(o.hardware_id)
        self.occ_md.append(o.metadata or None)

    def add_count(self, error_id: str, at: datetime) -> None:
        """One occurrence more of a group the store has; ``at`` is its time (the group's last_seen)."""
        self.deltas[error_id] = self.deltas.get(error_id, 0) + 1
        self.seen[error_id] = at

    def add_group(self, g: GroupRecord, delta: int) -> None:
        """The latest snapshot wins; increments add up; a group new in any snapshot stays new."""
        gid = g.error_id
        self.groups[gid] = g
        if delta or not g.stored:
            self.deltas[gid] = self.deltas.get(gid, 0) + delta
        if not g.stored:
            self.new.add(gid)

    def size(self) -> int:
        return len(self.occ_id) + len(self.groups) + len(self.ops) + sum(len(v) for v in self.upserts.values())

    def absorb(self, newer: WriteBatch) -> None:
        for name in (*OCC_COLUMNS, "occ_seq", "ops", "ops_seq"):
            getattr(self, name).extend(getattr(newer, name))
        for gid, seqs in newer.group_seq.items():
            self.group_seq.setdefault(gid, []).extend(seqs)
        for key, seqs in newer.upsert_seq.items():
            self.upsert_seq.setdefault(key, []).extend(seqs)
        for gid, g in newer.groups.items():
            self.groups[gid] = g
        for gid, d in newer.deltas.items():
            self.deltas[gid] = self.deltas.get(gid, 0) + d
        self.seen.update(newer.seen)
        self.new |= newer.new
        for kind, rows in newer.upserts.items():
            self.upserts.setdefault(kind, {}).update(rows)
        self.seq = max(self.seq, newer.seq)

    def seqs(self) -> list[int]:
        """Every write number this batch carries."""
        out = list(self.occ_seq) + list(self.ops_seq)
        for seqs in (*self.group_seq.values(), *self.upsert_seq.values()):
            out.extend(seqs)
        return out

    def units(self) -> list[WriteBatch]:
        """The batch in its smallest independent parts: each group with its own occurrences, its
        snapshot and its count, each upsert, each operation. A part's rows stand or fall together;
        no part needs another."""
        out: list[WriteBatch] = []
        by_group: dict[str, list[int]] = {}
        for i, gid in enumerate(self.occ_id):
            by_group.setdefault(gid, []).append(i)
        gids = {**dict.fromkeys(self.groups), **dict.fromkeys(self.deltas), **dict.fromkeys(by_group)}
        for gid in gids:
            u = WriteBatch()
            for i in by_group.get(gid, ()):
                for name in (*OCC_COLUMNS, "occ_seq"):
                    getattr(u, name).append(getattr(self, name)[i])
            if gid in self.groups:
                u.groups[gid] = self.groups[gid]
            if gid in self.deltas:
                u.deltas[gid] = self.deltas[gid]
            if gid in self.seen:
                u.seen[gid] = self.seen[gid]
            if gid in self.new:
                u.new.add(gid)
            if gid in self.group_seq:
                u.group_seq[gid] = list(self.group_seq[gid])
            u.seq = self.seq
            out.append(u)
        for kind, by_key in self.upserts.items():
            for key, row in by_key.items():
                u = WriteBatch()
                u.upserts = {kind: {key: row}}
                u.upsert_seq = {(kind, key): list(self.upsert_seq.get((kind, key), ()))}
                u.seq = self.seq
                out.append(u)
        op_seqs = self.ops_seq + [0] * (len(self.ops) - len(self.ops_seq))  # 0: nobody waits on it
        for op, seq in zip(self.ops, op_seqs, strict=True):
            u = WriteBatch()
            u.ops, u.ops_seq, u.seq = [op], [seq], self.seq
            out.append(u)
        return out

    @staticmethod
    def merged(parts: list[WriteBatch]) -> WriteBatch:
        b = WriteBatch()
        for p in parts:
            b.absorb(p)
        return b


def occurrence_columns(batch: WriteBatch) -> list[list[Any]]:
    """The batch's occurrences column by column, metadata serialized, ready to be written."""
    md = [dumps(m) if m else None for m in batch.occ_md]
    return [batch.occ_id, batch.occ_ts, batch.occ_msg, batch.occ_worker, batch.occ_task, batch.occ_hw, md]


def occurrence_rows(batch: WriteBatch) -> list[tuple[Any, ...]]:
    return list(zip(*occurrence_columns(batch), strict=True))


GroupWrite = tuple[GroupRecord, int, "datetime | None"]  # snapshot, count increment, latest occurrence


def statements_for(
    batch: WriteBatch,
    written: list[GroupWrite],
    known: list[GroupWrite],
    counts: list[tuple[str, int, datetime]] | None = None,
    upsert: bool = False,
) -> tuple[list[tuple[str, Any]], list[tuple[Any, ...]]]:
    """(statements, rows for the appender) that commit ``batch``: new groups ``written`` in full
    (inserted; with ``upsert``, added to rows another writer inserted: see
    ``schema.INSERT_GROUPS``), the rows of ``known`` groups updated, and the ``counts`` (id,
    increment, last_seen) of groups that only gained occurrences."""
    statements: list[tuple[str, Any]] = []
    for part in chunks(written):
        rows = [group_row(r, d, ts) for r, d, ts in part]
        statements.append((UPSERT_GROUPS if upsert else INSERT_GROUPS, columns_of(rows, len(GROUP_COLUMNS))))
    for part in chunks(known):
        rows = [update_row(r, d, ts) for r, d, ts in part]
        statements.append((UPDATE_GROUPS, columns_of(rows, len(UPDATE_COLUMNS))))
    for part in chunks(counts or []):
        statements.append((COUNT_GROUPS, columns_of(part, 3)))
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
    for kind, payload in batch.ops:
        if kind == "retention":  # payload: days
            seconds = [payload * 86400.0]
            statements.append(("DELETE FROM error_occurrences WHERE occurred_at < now() - to_seconds(?)", seconds))
            statements.append(("DELETE FROM recovery_performance WHERE timestamp < now() - to_seconds(?)", seconds))
            statements.append((EXPIRE_KEYS, None))
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
            for part in chunks(big, APPEND_PART):
                app.append_rows(part)
            app.flush()
        cur.execute("COMMIT")
    except BaseException:
        try:
            cur.execute("ROLLBACK")
        except Exception:
            pass
        raise


def bulk_load(cur: duckdb.DuckDBPyConnection, groups: list[GroupRecord], occurrences: list[OccurrenceRecord]) -> None:
    """Append whole groups (their counts as they are) and occurrences in one transaction through
    DuckDB's appender: the store's bulk path, for imports and benchmarks."""
    occ = [(o.error_id, o.occurred_at, o.message, o.worker_id, o.task_id, o.hardware_id,
            dumps(o.metadata) if o.metadata else None) for o in occurrences]
    cur.execute("BEGIN TRANSACTION")
    try:
        # parts no larger than the writer's (see CHUNK): a bulk load beside a serving loop must
        # not hold the GIL for a whole 50,000-row conversion either
        for table, rows, size in (("error_reports", [group_row(g, g.aggregated_count) for g in groups], CHUNK),
                                  ("error_occurrences", occ, APPEND_PART)):
            if rows:
                app = cur.appender(table)
                for part in chunks(rows, size):
                    app.append_rows(part)
                app.flush()
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
