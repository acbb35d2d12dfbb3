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
from collections.abc import Callable
from typing import Any

import asyncpg

from coordinator_plugins.error_handling.storage.base import SchemaTooNew, StoreClosed, StoreUnavailable
from coordinator_plugins.error_handling.storage.durability import wait_within
from coordinator_plugins.error_handling.storage.postgres_fleet import PostgresFleet
from coordinator_plugins.error_handling.storage.postgres_reads import PostgresReads
from coordinator_plugins.error_handling.storage.postgres_schema import (
    CREATE_VERSION_TABLE,
    MIGRATION_LOCK,
    MIGRATIONS,
    SCHEMA_VERSION,
    as_utc,
    redact,
    to_json,
)
from coordinator_plugins.error_handling.storage.postgres_writer import TRANSIENT, Batch, PostgresWriter
from coordinator_plugins.error_handling.storage.records import (
    GroupRecord,
    LearnerRecord,
    LevelRecord,
    OccurrenceRecord,
    StoreStatus,
    StrategyRun,
    StrategyScore,
    TimeoutRecord,
)

logger = logging.getLogger(__name__)

class PostgresStore(PostgresWriter, PostgresReads, PostgresFleet):
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
        self._batch = Batch()
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
        b = self._batch
        if self._occ_pending >= self.queue_limit:
            # As the DuckDB store: past the limit an occurrence's own row is not kept (counted in
            # dropped_occurrences), while its group's count still grows with it.
            self.dropped_occurrences += 1
        else:
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
        await wait_within(fut, timeout, lambda: f"write not durable within {timeout} s (last error: {self.last_error})")

    async def flush(self, timeout: float | None = None, seq: int | None = None) -> None:
        await self.wait_durable(self._seq if seq is None else min(seq, self._seq), timeout)

    def committed_seq(self) -> int:
        return self._committed  # group rows are written with their occurrences, never later

    def _release(self) -> None:
        while self._waiters and self._waiters[0][0] <= self._committed:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)

    # -- the writer ------------------------------------------------------------------------------------
    def status(self) -> StoreStatus:
        return StoreStatus(
            ok=self.failing_since is None and self.pool is not None and not self.closed,
            path=self.path,
            **self._health_fields(),
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
