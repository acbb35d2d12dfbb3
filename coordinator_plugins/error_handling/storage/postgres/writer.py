"""The writer of the PostgreSQL store: one task commits each batch of queued writes in one
transaction (group commit), releases the waiters only after that commit, and keeps retrying, newer
writes folded in, while the database fails. Each commit records its batch's token: after a
failure whose COMMIT may have been applied without an answer, the retry asks first, so an
occurrence is never counted twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg

from coordinator_plugins.error_handling.storage.base import StoreClosed
from coordinator_plugins.error_handling.storage.durability import Waiters, wait_within
from coordinator_plugins.error_handling.storage.health import Health
from coordinator_plugins.error_handling.storage.postgres.batch import PostgresBatch, PostgresQueue
from coordinator_plugins.error_handling.storage.postgres.idempotency import EXPIRE as EXPIRE_KEYS
from coordinator_plugins.error_handling.storage.postgres.pool import TRANSIENT, Pool
from coordinator_plugins.error_handling.storage.postgres.rows import columns, group_row, occurrence_row, run_row
from coordinator_plugins.error_handling.storage.postgres.schema import (
    GROUP_COLUMNS,
    INSERT_OCCURRENCES,
    INSERT_RUNS,
    OCC_COLUMNS,
    RUN_COLUMNS,
    UPSERT_GROUPS,
    UPSERTS,
)

logger = logging.getLogger(__name__)

# Refusals of the data itself (class 22, 23): only these are written in parts and dropped. Any
# other failure (the server, the link, a missing table, permissions) is retried, never dropped.
DATA_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


class PostgresWriter:
    """Commits what ``queue`` gathers through ``pool`` (a task on the loop), reports failures to
    ``health`` (and once to ``on_error``), and resolves the waits for durability. After failing
    on a pool that is gone for ``auto_reconnect_after`` seconds it calls ``reconnect``."""

    def __init__(
        self,
        pool: Pool,
        queue: PostgresQueue,
        health: Health,
        reconnect: Callable[[], Awaitable[bool]],
        coordinator_id: str = "",
        on_error: Callable[[BaseException], None] | None = None,
        gather: float = 0.0005,
        auto_reconnect_after: float = 10.0,
    ) -> None:
        self.pool = pool
        self.queue = queue
        self.health = health
        self.reconnect = reconnect
        self.coordinator_id = coordinator_id
        self.on_error = on_error
        self.gather = gather
        self.auto_reconnect_after = auto_reconnect_after  # s of failing on a closed pool before a new one
        self.committed = 0
        self._waiters = Waiters()
        self._task: asyncio.Task[None] | None = None
        self._stop = False

    # -- lifecycle -----------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        self._stop = False
        self._task = asyncio.create_task(self._run(), name="eh-pg-writer")

    async def stop(self) -> None:
        self._stop = True
        self.queue.wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def close(self) -> None:
        """Every pending wait fails with StoreClosed."""
        self._waiters.fail(lambda: StoreClosed("store closed before the write was durable"))

    # -- durability ----------------------------------------------------------------------------------
    async def wait_durable(self, seq: int, timeout: float | None = None) -> None:
        if seq <= self.committed:
            return
        if self.queue.closed or self._task is None:
            raise StoreClosed("store is not open")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(seq, fut)
        await wait_within(fut, timeout,
                          lambda: f"write not durable within {timeout} s (last error: {self.health.last_error})")

    # -- the task ---------------------------------------------------------------------------------------
    def _connected(self) -> asyncpg.Pool:
        if not self.pool.opened:
            raise asyncpg.InterfaceError("store is not connected")
        return self.pool.get()

    async def _run(self) -> None:
        q = self.queue
        backoff = 0.05
        batch: PostgresBatch | None = None
        unsure = False  # the last attempt failed: its COMMIT may have been applied without an answer
        while True:
            if batch is None:
                await q.wake.wait()
                q.wake.clear()
                if self.gather and len(q.batch.occurrences) < 256:
                    await asyncio.sleep(self.gather)  # let a burst gather into one commit
                batch = q.take()
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
                            newer = q.take()  # fold newer writes into the retry
                            if newer is not None:
                                batch.absorb(newer)
                        unsure = False
                        await self._commit_or_salvage(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the link, the server or the client's state: retry, never drop
                unsure = True
                self._failed(exc)
                if self.pool.gone and not self._stop and (
                    time.monotonic() - (self.health.failing_since or 0) > self.auto_reconnect_after
                ):
                    await self.reconnect()  # the pool itself is gone: a new one, as a recovery would
                elif not isinstance(exc, TRANSIENT) and self.pool.opened:
                    with contextlib.suppress(Exception):
                        await self.pool.expire()  # a connection in a broken state
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            unsure = False
            backoff = 0.05
            q.occurrences_queued -= len(batch.occurrences)
            self.committed = max(self.committed, batch.seq)
            if self.health.committed(batch.size()):
                logger.info("store: %s reachable again; buffered writes committed", self.pool.path)
            batch = None
            self._waiters.release(self.committed)

    async def _committed_already(self, token: str) -> bool:
        return bool(await self._connected().fetchval(
            "SELECT EXISTS (SELECT 1 FROM store_commits WHERE token = $1)", token))

    async def _commit_or_salvage(self, batch: PostgresBatch) -> None:
        try:
            await self._commit(batch)
        except DATA_ERRORS as exc:
            await self._salvage(batch, exc)

    async def _salvage(self, batch: PostgresBatch, exc: BaseException) -> None:
        """The database refused the batch's data: commit it in parts; drop (and count) only the
        parts it refuses on their own, so one bad row cannot block every write behind it. Each
        part leaves the batch once committed or dropped, so a retry (after the database failed
        meanwhile) never writes a part twice."""
        logger.error("store: a write failed on its data (%s: %s); writing the batch in parts", type(exc).__name__, exc)
        core = PostgresBatch()
        core.occurrences, core.groups, core.counts, core.retention = (
            batch.occurrences, batch.groups, batch.counts, batch.retention)
        pieces: list[PostgresBatch] = [core]
        for run in batch.runs:
            piece = PostgresBatch()
            piece.runs = [run]
            pieces.append(piece)
        for kind, rows in batch.upserts.items():
            for key, row in rows.items():
                piece = PostgresBatch()
                piece.upserts = {kind: {key: row}}
                pieces.append(piece)
        for piece in pieces:
            try:
                await self._commit(piece)
            except DATA_ERRORS as err:
                self.health.dropped_writes += piece.size()
                self.health.last_error = f"{type(err).__name__}: {err}"
                logger.error("store: dropped %d write(s) the database refuses: %s: %s", piece.size(),
                             type(err).__name__, err)
            if piece is core:
                self.queue.occurrences_queued -= len(batch.occurrences)
                batch.occurrences, batch.groups, batch.counts, batch.retention = [], {}, {}, None
            else:
                for run in piece.runs:
                    batch.runs.remove(run)
                for kind, rows in piece.upserts.items():
                    for key in rows:
                        batch.upserts[kind].pop(key, None)

    async def _commit(self, batch: PostgresBatch) -> None:
        async with self._connected().acquire() as con, con.transaction():
            await con.execute("INSERT INTO store_commits (token) VALUES ($1)", batch.token)
            if batch.groups:
                # rows locked in one order by every member: two commits never deadlock on them
                rows = [group_row(g, n) for g, n in sorted(batch.groups.values(), key=lambda x: x[0].error_id)]
                await con.execute(UPSERT_GROUPS, *columns(rows, len(GROUP_COLUMNS)))
            if batch.counts:
                ids = sorted(batch.counts)
                await con.execute(
                    "UPDATE error_reports r SET aggregated_count = r.aggregated_count + u.n, last_seen = "
                    "GREATEST(r.last_seen, u.at) FROM unnest($1::text[], $2::bigint[], $3::timestamptz[]) "
                    "AS u(id, n, at) WHERE r.error_id = u.id",
                    ids, [batch.counts[i][0] for i in ids], [batch.counts[i][1] for i in ids],
                )
            if batch.occurrences:
                rows = [occurrence_row(o, self.coordinator_id or None) for o in batch.occurrences]
                await con.execute(INSERT_OCCURRENCES, *columns(rows, len(OCC_COLUMNS)))
            if batch.runs:
                rows = [run_row(r, self.coordinator_id or None) for r in batch.runs]
                await con.execute(INSERT_RUNS, *columns(rows, len(RUN_COLUMNS)))
            for kind, by_key in batch.upserts.items():
                rows = list(by_key.values())
                await con.execute(UPSERTS[kind], *columns(rows, len(rows[0])))
            if batch.retention is not None:
                days = batch.retention
                await con.execute("DELETE FROM error_occurrences WHERE occurred_at < now() - make_interval("
                                  "secs => $1)", days * 86400.0)
                await con.execute("DELETE FROM recovery_performance WHERE timestamp < now() - make_interval("
                                  "secs => $1)", days * 86400.0)
                await con.execute(EXPIRE_KEYS)

    def _failed(self, exc: BaseException) -> None:
        if self.health.failed(exc):
            logger.error("store: write to %s failed, writes are buffered: %s", self.pool.path, self.health.last_error)
            if self.on_error is not None:
                self.on_error(exc)
