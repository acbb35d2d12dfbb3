"""The writes queued on the loop for the PostgreSQL writer task, gathered between two commits."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from coordinator_plugins.error_handling.storage.base import StoreClosed
from coordinator_plugins.error_handling.storage.postgres.rows import as_utc
from coordinator_plugins.error_handling.storage.records import GroupRecord, OccurrenceRecord, StrategyRun


class PostgresBatch:
    """Writes gathered between two commits."""

    __slots__ = ("counts", "groups", "occurrences", "retention", "runs", "seq", "token", "upserts")

    def __init__(self) -> None:
        self.seq = 0
        self.token = uuid.uuid4().hex  # recorded with the commit: a retry after an unanswered COMMIT asks first
        self.occurrences: list[OccurrenceRecord] = []
        self.groups: dict[str, tuple[GroupRecord, int]] = {}  # error id -> (latest snapshot, occurrences)
        self.counts: dict[str, list[Any]] = {}  # error id -> [occurrences, latest time]: no snapshot given
        self.runs: list[StrategyRun] = []
        self.upserts: dict[str, dict[Any, tuple[Any, ...]]] = {}
        self.retention: float | None = None

    def size(self) -> int:
        return (len(self.occurrences) + len(self.groups) + len(self.counts) + len(self.runs)
                + sum(map(len, self.upserts.values())))

    def absorb(self, newer: PostgresBatch) -> None:
        self.occurrences.extend(newer.occurrences)
        for error_id, (snap, n) in newer.groups.items():
            old = self.groups.get(error_id)
            self.groups[error_id] = (snap, n + (old[1] if old else 0))
        for error_id, (n, at) in newer.counts.items():
            self.count(error_id, n, at)
        self.runs.extend(newer.runs)
        for kind, rows in newer.upserts.items():
            self.upserts.setdefault(kind, {}).update(rows)
        if newer.retention is not None:
            self.retention = newer.retention
        self.seq = newer.seq

    def count(self, error_id: str, n: int, at: Any) -> None:
        c = self.counts.get(error_id)
        if c is None:
            self.counts[error_id] = [n, at]
        else:
            c[0] += n
            c[1] = max(c[1], at)


class PostgresQueue:
    """The batch being gathered, each write numbered (seq); ``wake`` tells the writer task.
    Past ``limit`` queued occurrences an occurrence keeps only its count, as in the DuckDB store."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.batch = PostgresBatch()
        self.seq = 0
        self.occurrences_queued = 0
        self.dropped_occurrences = 0
        self.wake = asyncio.Event()
        self.closed = False

    def _mark(self) -> int:
        if self.closed:
            raise StoreClosed("store is closed")
        self.seq += 1
        self.batch.seq = self.seq
        self.wake.set()
        return self.seq

    def occurrence(self, occurrence: OccurrenceRecord, group: GroupRecord | None) -> int:
        b = self.batch
        if self.occurrences_queued >= self.limit:
            # As the DuckDB store: past the limit an occurrence's own row is not kept (counted in
            # dropped_occurrences), while its group's count still grows with it.
            self.dropped_occurrences += 1
        else:
            self.occurrences_queued += 1
            b.occurrences.append(occurrence)
        if group is None:
            old = b.groups.get(occurrence.error_id)
            if old is not None:  # a snapshot of this group is already in the batch: count with it
                b.groups[occurrence.error_id] = (old[0], old[1] + 1)
                b.count(occurrence.error_id, 0, as_utc(occurrence.occurred_at))  # last_seen moves to it
            else:
                b.count(occurrence.error_id, 1, as_utc(occurrence.occurred_at))
        else:
            old = b.groups.get(group.error_id)
            b.groups[group.error_id] = (group, 1 + (old[1] if old else 0))
        return self._mark()

    def group(self, group: GroupRecord) -> int:
        b = self.batch
        old = b.groups.get(group.error_id)
        b.groups[group.error_id] = (group, old[1] if old else 0)
        return self._mark()

    def run(self, run: StrategyRun) -> int:
        self.batch.runs.append(run)
        return self._mark()

    def upsert(self, kind: str, key: Any, row: tuple[Any, ...]) -> int:
        self.batch.upserts.setdefault(kind, {})[key] = row
        return self._mark()

    def retention(self, days: float) -> int:
        self.batch.retention = float(days)
        return self._mark()

    def take(self) -> PostgresBatch | None:
        b = self.batch
        if b.seq == 0:
            return None
        self.batch = PostgresBatch()
        return b
