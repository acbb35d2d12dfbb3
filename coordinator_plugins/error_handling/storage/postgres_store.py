"""The PostgreSQL store (SPEC section 10): the same promises as the DuckDB store, on asyncpg.

Writes are queued on the loop and committed by one writer task in batches (group commit: while
one transaction commits, the next batch gathers). A write's waiter is released only after the
commit that holds it, so a 202 means the occurrence is in the database. Counts are increments
computed by the database (``aggregated_count = aggregated_count + n``), so members of a fleet
writing the same group never lose each other's occurrences. When the database is unreachable,
writes stay buffered (newer ones folded into the retried batch) and the pool reconnects.

The password comes from the URL or ``PGPASSWORD`` (asyncpg reads both); it is never logged: logs
and diagnostics show the URL through :func:`redact`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from coordinator_plugins.error_handling.storage.base import SchemaTooNew, StoreClosed, StoreFull, StoreUnavailable
from coordinator_plugins.error_handling.storage.postgres_fleet import PostgresFleet
from coordinator_plugins.error_handling.storage.postgres_reads import PostgresReads
from coordinator_plugins.error_handling.storage.postgres_schema import (
    CREATE_VERSION_TABLE,
    INSERT_OCCURRENCES,
    INSERT_RUNS,
    MIGRATION_LOCK,
    MIGRATIONS,
    SCHEMA_VERSION,
    UPSERT_GROUPS,
    UPSERTS,
    clean_text,
    redact,
    to_json,
)
from coordinator_plugins.error_handling.storage.records import (
    GroupRecord,
    LearnerRecord,
    LevelRecord,
    OccurrenceRecord,
    StoreStatus,
    StrategyRun,
    StrategyScore,
    TimeoutRecord,
    as_utc,
)

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


class _Batch:
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

    def absorb(self, newer: _Batch) -> None:
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


class PostgresStore(PostgresReads, PostgresFleet):
    """Start with :meth:`open` and stop with :meth:`close`, both on the loop."""

    def __init__(
        self,
        url: str,
        coordinator_id: str = "",
        queue_limit: int = 200_000,
        on_error: Callable[[BaseException], None] | None = None,
        pool_size: int = 8,
        gather: float = 0.0005,
    ) -> None:
        self.url = url
        self.coordinator_id = coordinator_id
        self.queue_limit = queue_limit
        self.on_error = on_error
        self.pool_size = pool_size
        self.gather = gather
        self.pool: asyncpg.Pool | None = None
        self._batch = _Batch()
        self._seq = 0
        self._committed = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._stop = False
        self._occ_pending = 0
        self.schema_version = 0
        self.commits = 0
        self.rows_written = 0
        self.dropped_writes = 0
        self.dropped_occurrences = 0
        self.reconnects = 0
        self.skipped_rows = 0
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self.closed = False
        self.auto_reconnect_after = 10.0  # s of failing on a closed pool before the writer renews it

    @property
    def path(self) -> str:
        return redact(self.url)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def _init_connection(self, con: asyncpg.Connection) -> None:
        await con.execute("SET TIME ZONE 'UTC'")

    async def open(self) -> None:
        try:
            self.pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self.pool_size, init=self._init_connection, timeout=10,
                command_timeout=60,
            )
            async with self.pool.acquire() as con:
                await self._migrate(con)
        except SchemaTooNew:
            await self._close_pool()
            raise
        except (*TRANSIENT, asyncpg.PostgresError, ValueError) as exc:
            await self._close_pool()
            raise StoreUnavailable(
                f"error_handling.database: cannot open {self.path}: {type(exc).__name__}: {exc}"
            ) from None
        self.closed = False
        self._writer = asyncio.create_task(self._run_writer(), name="eh-pg-writer")

    async def _migrate(self, con: asyncpg.Connection) -> None:
        async with con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await con.execute(CREATE_VERSION_TABLE)
            current = await con.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
            if current > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"error_handling.database: {self.path} has schema version {current}, newer than this "
                    f"plugin's {SCHEMA_VERSION}: upgrade coordinator_plugins"
                )
            for version, description, sql in MIGRATIONS:
                if version > current:
                    await con.execute(sql)
                    await con.execute(
                        "INSERT INTO schema_version (version, description) VALUES ($1, $2)", version, description
                    )
                    logger.info("store: %s migrated to schema version %d (%s)", self.path, version, description)
        self.schema_version = max(current, SCHEMA_VERSION)

    async def _close_pool(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(10):
                    await pool.close()
            except (TimeoutError, *TRANSIENT):
                pool.terminate()

    async def close(self) -> None:
        if self.closed or self.pool is None:
            self.closed = True
            return
        try:
            await self.flush(timeout=30)
        except TimeoutError:
            logger.error("store: pending writes could not be committed within 30 s (%s)", self.last_error)
        except StoreClosed:
            pass
        self._stop = True
        self._wake.set()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer
            self._writer = None
        self.closed = True
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(StoreClosed("store closed before the write was durable"))
        self._waiters.clear()
        await self._close_pool()

    # -- writes --------------------------------------------------------------------------------------
    def _mark(self) -> int:
        if self.closed:
            raise StoreClosed("store is closed")
        self._seq += 1
        self._batch.seq = self._seq
        self._wake.set()
        return self._seq

    def record_occurrence(self, occurrence: OccurrenceRecord, group: GroupRecord | None = None) -> int:
        if self._occ_pending >= self.queue_limit:
            self.dropped_occurrences += 1
            raise StoreFull(f"write queue full ({self.queue_limit} occurrences waiting for the database)")
        b = self._batch
        self._occ_pending += 1
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

    def save_group(self, group: GroupRecord) -> int:
        b = self._batch
        old = b.groups.get(group.error_id)
        b.groups[group.error_id] = (group, old[1] if old else 0)
        return self._mark()

    def record_strategy_run(self, run: StrategyRun) -> int:
        self._batch.runs.append(run)
        return self._mark()

    def _upsert(self, kind: str, key: Any, row: tuple[Any, ...]) -> int:
        self._batch.upserts.setdefault(kind, {})[key] = row
        return self._mark()

    def save_recovery_level(self, level: LevelRecord) -> int:
        row = (level.error_id, level.level, as_utc(level.updated_at), to_json([dict(h) for h in level.history]))
        return self._upsert("level", level.error_id, row)

    def save_strategy_score(self, score: StrategyScore) -> int:
        row = (score.key, score.strategy_id, score.score, as_utc(score.updated_at), score.samples,
               to_json(dict(score.metrics)))
        return self._upsert("score", (score.key, score.strategy_id), row)

    def save_timeout(self, timeout: TimeoutRecord) -> int:
        row = (timeout.error_type, timeout.strategy_id, timeout.timeout, as_utc(timeout.updated_at), timeout.srtt,
               timeout.rttvar, timeout.samples)
        return self._upsert("timeout", (timeout.error_type, timeout.strategy_id), row)

    def save_learner_state(self, state: LearnerRecord) -> int:
        return self._upsert("learner", state.key, (state.key, to_json(dict(state.state)), as_utc(state.updated_at)))

    def apply_retention(self, days: float) -> int:
        self._batch.retention = float(days)
        return self._mark()

    async def wait_durable(self, seq: int, timeout: float | None = None) -> None:
        if seq <= self._committed:
            return
        if self.closed or self._writer is None:
            raise StoreClosed("store is not open")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (seq, id(fut), fut))
        if timeout is None:
            await fut
            return
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # nobody waits for it any more
            raise TimeoutError(f"write not durable within {timeout} s (last error: {self.last_error})") from None

    async def flush(self, timeout: float | None = None) -> None:
        await self.wait_durable(self._seq, timeout)

    def _release(self) -> None:
        while self._waiters and self._waiters[0][0] <= self._committed:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)

    # -- the writer ------------------------------------------------------------------------------------
    def _take(self) -> _Batch | None:
        b = self._batch
        if b.seq == 0:
            return None
        self._batch = _Batch()
        return b

    async def _run_writer(self) -> None:
        backoff = 0.05
        batch: _Batch | None = None
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

    async def _commit_or_salvage(self, batch: _Batch) -> None:
        try:
            await self._commit(batch)
        except DATA_ERRORS as exc:
            await self._salvage(batch, exc)

    async def _salvage(self, batch: _Batch, exc: BaseException) -> None:
        """The database refused the batch's data: commit it in parts; drop (and count) only the
        parts it refuses on their own, so one bad row cannot block every write behind it. Each
        part leaves the batch once committed or dropped, so a retry (after the database failed
        meanwhile) never writes a part twice."""
        logger.error("store: a write failed on its data (%s: %s); writing the batch in parts", type(exc).__name__, exc)
        core = _Batch()
        core.occurrences, core.groups, core.counts, core.retention = (
            batch.occurrences, batch.groups, batch.counts, batch.retention)
        pieces: list[_Batch] = [core]
        for run in batch.runs:
            piece = _Batch()
            piece.runs = [run]
            pieces.append(piece)
        for kind, rows in batch.upserts.items():
            for key, row in rows.items():
                piece = _Batch()
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

    async def _commit(self, batch: _Batch) -> None:
        if self.pool is None:
            raise asyncpg.InterfaceError("store is not connected")
        async with self.pool.acquire() as con, con.transaction():
            await con.execute("INSERT INTO store_commits (token) VALUES ($1)", batch.token)
            if batch.groups:
                rows = [_group_row(g, n) for g, n in batch.groups.values()]
                await con.execute(UPSERT_GROUPS, *_columns(rows, 26))
            if batch.counts:
                ids = list(batch.counts)
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
        first = self.failing_since is None
        if first:
            self.failing_since = time.monotonic()
        self.last_error = f"{type(exc).__name__}: {exc}"
        if first:
            logger.error("store: write to %s failed, writes are buffered: %s", self.path, self.last_error)
            if self.on_error is not None:
                self.on_error(exc)

    # -- health --------------------------------------------------------------------------------------
    def status(self) -> StoreStatus:
        return StoreStatus(
            ok=self.failing_since is None and self.pool is not None and not self.closed,
            path=self.path,
            pending_writes=self._seq - self._committed,
            queued_occurrences=self._occ_pending,
            dropped_occurrences=self.dropped_occurrences,
            dropped_writes=self.dropped_writes,
            commits=self.commits,
            rows_written=self.rows_written,
            reconnects=self.reconnects,
            last_error=self.last_error,
            failing_for_seconds=(time.monotonic() - self.failing_since) if self.failing_since else 0.0,
            schema_version=self.schema_version,
            skipped_rows=self.skipped_rows,
        )

    async def ping(self) -> bool:
        if self.pool is None or self.pool.is_closing():
            return False
        try:
            async with asyncio.timeout(5):
                async with self.pool.acquire() as con:
                    await con.fetchval("SELECT 1")
            return True
        except (*TRANSIENT, asyncpg.PostgresError):
            return False

    def break_connection(self) -> None:
        """Fault injection: every connection dies at once, as a crashed database link would; the
        store stays unreachable until :meth:`reconnect` (or the writer's own, after a while)."""
        if self.pool is not None:
            self.pool.terminate()

    async def _new_pool(self) -> None:
        old, self.pool = self.pool, await asyncpg.create_pool(
            self.url, min_size=1, max_size=self.pool_size, init=self._init_connection, timeout=10,
            command_timeout=60,
        )
        if old is not None:
            old.terminate()

    async def reconnect(self) -> bool:
        """A new pool of connections (or the same, its connections renewed); True once one works."""
        if self.closed:
            return False
        try:
            if self.pool is None or self.pool.is_closing():
                await self._new_pool()
            else:
                await self.pool.expire_connections()
        except (*TRANSIENT, asyncpg.PostgresError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            logger.error("store: reconnect to %s failed: %s", self.path, self.last_error)
            return False
        ok = await self.ping()
        if ok:
            self.reconnects += 1
            self._wake.set()
            logger.info("store: reconnected to %s", self.path)
        return ok
