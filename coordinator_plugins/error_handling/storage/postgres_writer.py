"""The writer of :class:`~.postgres_store.PostgresStore`: one task commits each batch of queued
writes in one transaction (group commit), releases the waiters only after that commit, and keeps
retrying, newer writes folded in, while the database fails. Each commit records its batch's token:
after a failure whose COMMIT may have been applied without an answer, the retry asks first, so
an occurrence is never counted twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from coordinator_plugins.error_handling.storage.health import WriteHealth
from coordinator_plugins.error_handling.storage.postgres_schema import (
    INSERT_OCCURRENCES,
    INSERT_RUNS,
    UPSERT_GROUPS,
    UPSERTS,
    as_utc,
    clean_text,
    to_json,
)
from coordinator_plugins.error_handling.storage.records import GroupRecord, OccurrenceRecord, StrategyRun

logger = logging.getLogger(__name__)

TRANSIENT = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
)

# Refusals of the data itself (class 22, 23): only these are written in parts and dropped. Any
# other failure (the server, the link, a missing table, permissions) is retried, never dropped.
DATA_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


class Batch:
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

    def absorb(self, newer: Batch) -> None:
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


def _group_row(g: GroupRecord, added: int) -> tuple[Any, ...]:
    return (
        g.error_id, g.fingerprint, g.error_type.value, g.error_severity.value, g.severity_rank, g.category.value,
        clean_text(g.message), clean_text(g.component), clean_text(g.operation), clean_text(g.worker_id),
        clean_text(g.task_id), clean_text(g.hardware_id), clean_text(g.exception_type), clean_text(g.stack_trace),
        to_json(dict(g.metadata)), as_utc(g.first_seen), as_utc(g.last_seen), added, g.retry_count,
        g.retry_successful, g.resolution_status.value,
        as_utc(g.resolution_time) if g.resolution_time else None, g.resolution_strategy, g.regression_count,
        g.recovery_level, to_json(dict(g.recovery_details)),
    )


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    if not rows:
        return [[] for _ in range(width)]
    return [list(c) for c in zip(*rows, strict=True)]


class PostgresWriter(WriteHealth):
    """Mixed into :class:`PostgresStore`."""

    pool: asyncpg.Pool | None
    coordinator_id: str
    gather: float
    on_error: Callable[[BaseException], None] | None
    auto_reconnect_after: float
    failing_since: float | None
    last_error: str | None
    commits: int
    rows_written: int
    dropped_writes: int
    _batch: Batch
    _wake: asyncio.Event
    _stop: bool
    _committed: int
    _occ_pending: int

    @property
    def path(self) -> str:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    async def reconnect(self) -> bool:
        raise NotImplementedError

    def _take(self) -> Batch | None:
        b = self._batch
        if b.seq == 0:
            return None
        self._batch = Batch()
        return b

    async def _run_writer(self) -> None:
        backoff = 0.05
        batch: Batch | None = None
        unsure = False  # the last attempt failed: its COMMIT may have been applied without an answer
        while True:
            if batch is None:
                await self._wake.wait()
                self._wake.clear()
                if self.gather and len(self._batch.occurrences) < 256:
                    await asyncio.sleep(self.gather)  # let a burst gather into one commit
                batch = self._take()
                if batch is None:
                    if self._stop:
                        return
                    continue
            try:
                async with asyncio.timeout(60):
                    if unsure and await self._committed_already(batch.token):
                        pass  # it did commit: retrying would count its occurrences twice
                    else:
                        if unsure:
                            newer = self._take()  # fold newer writes into the retry
                            if newer is not None:
                                batch.absorb(newer)
                        unsure = False
                        await self._commit_or_salvage(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the link, the server or the client's state: retry, never drop
                unsure = True
                self._failed(exc)
                if self.pool is not None and self.pool.is_closing() and not self._stop and (
                    time.monotonic() - (self.failing_since or 0) > self.auto_reconnect_after
                ):
                    await self.reconnect()  # the pool itself is gone: a new one, as a recovery would
                elif not isinstance(exc, TRANSIENT) and self.pool is not None:
                    with contextlib.suppress(Exception):
                        await self.pool.expire_connections()  # a connection in a broken state
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            unsure = False
            backoff = 0.05
            self._occ_pending -= len(batch.occurrences)
            self._committed = max(self._committed, batch.seq)
            self.commits += 1
            self.rows_written += batch.size()
            if self.failing_since is not None:
                logger.info("store: %s reachable again; buffered writes committed", self.path)
            self.failing_since = None
            batch = None
            self._release()

    async def _committed_already(self, token: str) -> bool:
        if self.pool is None:
            raise asyncpg.InterfaceError("store is not connected")
        return bool(await self.pool.fetchval("SELECT EXISTS (SELECT 1 FROM store_commits WHERE token = $1)", token))

    async def _commit_or_salvage(self, batch: Batch) -> None:
        try:
            await self._commit(batch)
        except DATA_ERRORS as exc:
            await self._salvage(batch, exc)

    async def _salvage(self, batch: Batch, exc: BaseException) -> None:
        """The database refused the batch's data: commit it in parts; drop (and count) only the
        parts it refuses on their own, so one bad row cannot block every write behind it. Each
        part leaves the batch once committed or dropped, so a retry (after the database failed
        meanwhile) never writes a part twice."""
        logger.error("store: a write failed on its data (%s: %s); writing the batch in parts", type(exc).__name__, exc)
        core = Batch()
        core.occurrences, core.groups, core.counts, core.retention = (
            batch.occurrences, batch.groups, batch.counts, batch.retention)
        pieces: list[Batch] = [core]
        for run in batch.runs:
            piece = Batch()
            piece.runs = [run]
            pieces.append(piece)
        for kind, rows in batch.upserts.items():
            for key, row in rows.items():
                piece = Batch()
                piece.upserts = {kind: {key: row}}
                pieces.append(piece)
        for piece in pieces:
            try:
                await self._commit(piece)
            except DATA_ERRORS as err:
                self.dropped_writes += piece.size()
                self.last_error = f"{type(err).__name__}: {err}"
                logger.error("store: dropped %d write(s) the database refuses: %s: %s", piece.size(),
                             type(err).__name__, err)
            if piece is core:
                self._occ_pending -= len(batch.occurrences)
                batch.occurrences, batch.groups, batch.counts, batch.retention = [], {}, {}, None
            else:
                for run in piece.runs:
                    batch.runs.remove(run)
                for kind, rows in piece.upserts.items():
                    for key in rows:
                        batch.upserts[kind].pop(key, None)

    async def _commit(self, batch: Batch) -> None:
        if self.pool is None:
            raise asyncpg.InterfaceError("store is not connected")
        async with self.pool.acquire() as con, con.transaction():
            await con.execute("INSERT INTO store_commits (token) VALUES ($1)", batch.token)
            if batch.groups:
                # rows locked in one order by every member: two commits never deadlock on them
                rows = [_group_row(g, n) for g, n in sorted(batch.groups.values(), key=lambda x: x[0].error_id)]
                await con.execute(UPSERT_GROUPS, *_columns(rows, 26))
            if batch.counts:
                ids = sorted(batch.counts)
                await con.execute(
                    "UPDATE error_reports r SET aggregated_count = r.aggregated_count + u.n, last_seen = "
                    "GREATEST(r.last_seen, u.at) FROM unnest($1::text[], $2::bigint[], $3::timestamptz[]) "
                    "AS u(id, n, at) WHERE r.error_id = u.id",
                    ids, [batch.counts[i][0] for i in ids], [batch.counts[i][1] for i in ids],
                )
            if batch.occurrences:
                me = self.coordinator_id or None
                rows = [
                    (o.error_id, as_utc(o.occurred_at), clean_text(o.message), clean_text(o.worker_id),
                     clean_text(o.task_id), clean_text(o.hardware_id),
                     to_json(dict(o.metadata)) if o.metadata else None, me)
                    for o in batch.occurrences
                ]
                await con.execute(INSERT_OCCURRENCES, *_columns(rows, 8))
            if batch.runs:
                me = self.coordinator_id or None
                rows = [
                    (r.strategy_id, r.strategy_name, r.error_type, float(r.execution_time), bool(r.success),
                     as_utc(r.timestamp), r.hardware_id, r.affected_tasks, r.recovered_tasks,
                     to_json(dict(r.resource_usage)), float(r.impact_score), float(r.stability_score),
                     to_json(dict(r.context)), r.error_id, r.level, r.outcome, me)
                    for r in batch.runs
                ]
                await con.execute(INSERT_RUNS, *_columns(rows, 17))
            for kind, by_key in batch.upserts.items():
                rows = list(by_key.values())
                await con.execute(UPSERTS[kind], *_columns(rows, len(rows[0])))
            if batch.retention is not None:
                days = batch.retention
                await con.execute("DELETE FROM error_occurrences WHERE occurred_at < now() - make_interval("
                                  "secs => $1)", days * 86400.0)
                await con.execute("DELETE FROM recovery_performance WHERE timestamp < now() - make_interval("
                                  "secs => $1)", days * 86400.0)

    def _failed(self, exc: BaseException) -> None:
        if self._note_failure(exc):
            logger.error("store: write to %s failed, writes are buffered: %s", self.path, self.last_error)
            if self.on_error is not None:
                self.on_error(exc)

    # -- health --------------------------------------------------------------------------------------
