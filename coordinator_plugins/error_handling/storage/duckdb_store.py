"""The embedded store: DuckDB behind the ``Store`` protocol (``base.py``).

DuckDB never runs on the event loop: one writer thread with its own cursor batches every
write into one transaction (group commit), and reads run on a reader thread with its own
cursor. ``wait_durable(seq)`` resolves when the write numbered ``seq`` is committed. The writer
also watches the file: one deleted or replaced under it is recreated with everything the store
holds (``recreate.py``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

import duckdb

from coordinator_plugins.error_handling.storage.base import StoreClosed, StoreUnavailable
from coordinator_plugins.error_handling.storage.batch import Batch
from coordinator_plugins.error_handling.storage.duckdb_reads import DuckDBReads
from coordinator_plugins.error_handling.storage.durability import Durability, Wake
from coordinator_plugins.error_handling.storage.migrations import migrate
from coordinator_plugins.error_handling.storage.order import GroupOrder
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
from coordinator_plugins.error_handling.storage.recreate import FileWatch
from coordinator_plugins.error_handling.storage.schema import (
    UPSERTS,
    learner_row,
    level_row,
    perf_row,
    score_row,
    timeout_row,
)
from coordinator_plugins.error_handling.storage.seed_migration import migrate_seed_database
from coordinator_plugins.error_handling.storage.writer import WriterLoop

logger = logging.getLogger(__name__)
R = TypeVar("R")
CLOSE_FLUSH_TIMEOUT = 5.0  # s close() waits for the queued writes

Cursor = duckdb.DuckDBPyConnection
__all__ = ["DuckDBStore", "StoreUnavailable"]


class DuckDBStore(Durability, WriterLoop, DuckDBReads):
    """The embedded store. Start with :meth:`open` (on the loop) and stop with :meth:`close`."""

    def __init__(
        self,
        path: str,
        queue_limit: int = 200_000,
        on_error: Callable[[BaseException], None] | None = None,
        auto_reconnect_after: float = 10.0,
        group_interval: float = 0.2,
        gather: float = 0.0,
        memory_mb: int = 64,
        fallback_to_memory: bool = False,
    ) -> None:
        self.fallback_to_memory = fallback_to_memory
        self.path = path
        self.memory_mb = memory_mb
        self.queue_limit = queue_limit
        self.on_error = on_error
        self.auto_reconnect_after = auto_reconnect_after
        self._con: duckdb.DuckDBPyConnection | None = None
        self._generation = 0
        self._conn_lock = threading.Lock()
        self._lock = threading.Lock()
        self._batch = Batch()
        self._wake = Wake()
        self._stop = False
        self._seq = 0
        self._committed = 0
        # Rows of groups already in the table are written lazily (they are derived from the
        # occurrences, which are always durable first): at most every ``group_interval`` seconds,
        # and whenever flush() asks. ``_groups_committed`` is the seq through which they are.
        self.group_interval = group_interval
        self._lazy: dict[str, GroupRecord] = {}
        self._lazy_delta: dict[str, int] = {}
        self._lazy_seen: dict[str, datetime] = {}
        self._lazy_since = 0.0
        self._force_groups = 0
        self._groups_committed = 0
        self._flush_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self.gather = gather
        self._last_commit = 0.0
        self._appender: Any = None
        self._appender_cur: Any = None
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        # (deadline, id, future) of the waiters that have a timeout; one sweeping timer serves
        # them all, cheaper per request than a timer per wait (see wait_durable).
        self._deadlines: list[tuple[float, int, asyncio.Future[None]]] = []
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_soon = False  # a wake of the writer is scheduled on the loop
        self._writer_idle = False  # the writer waits for writes (set by the writer thread)
        self._writer: threading.Thread | None = None
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eh-store-read")
        self._local = threading.local()
        self._occ_pending = 0
        self.dropped_occurrences = 0
        self.dropped_writes = 0
        self.commits = 0
        self.rows_written = 0
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self.reconnects = 0
        self.fallback_reason: str | None = None
        self.seed_migration: dict[str, Any] | None = None  # what converting a seed-written file did
        self.schema_version = 0
        self.migrated_from: int | None = None
        # seq -> why the database refused that write (the most recent REFUSED_KEPT of them)
        self._refused: dict[int, str] = {}
        self.skipped_rows = 0  # stored rows load_state could not read
        self.order = GroupOrder()  # every group's (last_seen, error_id), for paging (see order.py)
        self.watch = FileWatch(self)

    # -- lifecycle -------------------------------------------------------------------------
    def _connect(self) -> duckdb.DuckDBPyConnection:
        # DuckDB's buffer cache may otherwise grow to most of the machine's memory: bound it, as a
        # plugin living in someone else's process should (it spills to disk beyond the limit).
        con = duckdb.connect(
            self.path,
            config={
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "memory_limit": f"{self.memory_mb}MB",
            },
        )
        try:
            # A file the seed framework wrote is converted to this layout first (SPEC 11).
            migrated = migrate_seed_database(con)
            if migrated is not None:
                self.seed_migration = migrated.to_dict()
            before, self.schema_version = migrate(con, self.path)
            if before != self.schema_version and before:
                self.migrated_from = before
        except BaseException:
            con.close()  # or the file stays open, and locked, until the garbage collector runs
            raise
        return con

    async def open(self, fallback_to_memory: bool | None = None) -> None:
        if fallback_to_memory is None:
            fallback_to_memory = self.fallback_to_memory
        self._loop = asyncio.get_running_loop()
        self._wake_soon = False
        try:
            self._con = await asyncio.to_thread(self._connect)
        except StoreUnavailable:
            raise  # a schema newer than the code: no fallback could read it either
        except duckdb.Error as exc:
            reason = str(exc).splitlines()[0]
            if "lock" in reason.lower():
                reason = f"it is locked by another process ({reason})"
            if not fallback_to_memory:
                raise StoreUnavailable(f"error_handling.database: cannot open {self.path!r}: {reason}") from None
            logger.error(
                "error handling: cannot open %s (%s); falling back to an in-memory database: "
                "nothing will survive a restart",
                self.path,
                reason,
            )
            self.fallback_reason = reason
            self.path = ":memory:"
            self._con = await asyncio.to_thread(self._connect)
        self.watch.opened()
        try:
            self._writer = threading.Thread(target=self._run_writer, name="eh-store-writer", daemon=True)
            self._writer.start()
        except BaseException:
            self._close_connection()
            raise

    def _close_connection(self) -> None:
        with self._conn_lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    async def close(self) -> None:
        """Flush what is queued, stop the threads, close the database. Idempotent."""
        if self._writer is None:
            self._close_connection()
            return
        try:
            # bounded, so that a shutdown takes seconds: what was acknowledged is committed already
            # (a 202 waits for its commit); what is left are the lazy updates of known groups
            await self.flush(CLOSE_FLUSH_TIMEOUT)
        except (TimeoutError, StoreClosed):
            logger.error("store: pending writes could not be flushed within %g s (%s)", CLOSE_FLUSH_TIMEOUT,
                         self.last_error)
        self._stop = True
        self._wake.set()
        await asyncio.to_thread(self._writer.join, 3)
        self._reader.shutdown(wait=True)
        self._close_connection()
        self._writer = None
        for waiters in (self._waiters, self._flush_waiters):
            for _, _, fut in waiters:
                if not fut.done():
                    fut.set_exception(StoreClosed("store closed before the write was durable"))
            waiters.clear()
        self._deadlines.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    # -- writes (called on the loop; never block) -----------------------------------------
    # Occurrences are buffered column-wise (lists of untracked atoms, so a storm does not fill
    # the garbage collector's old generation), groups as a map of dirty reports, and the rarer
    # writes as a list of operations. The writer swaps all three out under a short lock.
    def _mark(self) -> int:
        self._seq += 1
        self._batch.seq = self._seq
        if asyncio._get_running_loop() is not self._loop:  # another thread (or loop)
            self._wake.set()
        elif self._writer_idle and not self._wake_soon:
            # On the loop, an idle writer is woken once per turn of the loop, after the callbacks
            # that are ready now (a burst of requests) have queued their writes: one commit
            # carries them all, and the writer is not woken (nor the GIL handed to it) per write.
            # A busy writer is not woken at all: it looks at the batch before it waits again.
            self._wake_soon = True
            try:
                self._loop.call_soon(self._wake_writer)  # type: ignore[union-attr]
            except RuntimeError:  # the loop is closed
                self._wake_writer()
        return self._seq

    def _wake_writer(self) -> None:
        self._wake_soon = False
        self._wake.set()

    def record_occurrence(self, occurrence: OccurrenceRecord, group: GroupRecord | None = None) -> int:
        with self._lock:
            b = self._batch
            seq = self._mark()
            if self._occ_pending >= self.queue_limit:
                self.dropped_occurrences += 1  # the group row still carries the count
                # no row of its own: the write stands or falls with its group's count
                b.group_seq.setdefault(occurrence.error_id, []).append(seq)
            else:
                self._occ_pending += 1
                b.add_occurrence(occurrence, seq)  # its seq rides with its row (occ_seq)
            if group is None:
                b.add_count(occurrence.error_id, occurrence.occurred_at)
            else:
                b.add_group(group, 1)
            return seq

    def save_group(self, group: GroupRecord) -> int:
        with self._lock:
            b = self._batch
            # a group never written is inserted with the count it has; a stored count is kept
            new = not group.stored and group.error_id not in b.deltas
            b.add_group(group, group.aggregated_count if new else 0)
            seq = self._mark()
            b.group_seq.setdefault(group.error_id, []).append(seq)
            return seq

    def _put(self, kind: str, key: Any, payload: Any) -> int:
        with self._lock:
            b = self._batch
            seq = self._mark()
            if kind in UPSERTS:
                b.upserts.setdefault(kind, {})[key] = payload
                b.upsert_seq.setdefault((kind, key), []).append(seq)
            else:
                b.ops.append((kind, payload))
                b.ops_seq.append(seq)
            return seq

    def record_strategy_run(self, run: StrategyRun) -> int:
        return self._put("perf", None, perf_row(run))

    def save_recovery_level(self, level: LevelRecord) -> int:
        return self._put("level", level.error_id, level_row(level))

    def save_strategy_score(self, score: StrategyScore) -> int:
        return self._put("score", (score.key, score.strategy_id), score_row(score))

    def save_timeout(self, timeout: TimeoutRecord) -> int:
        return self._put("timeout", (timeout.error_type, timeout.strategy_id), timeout_row(timeout))

    def save_learner_state(self, state: LearnerRecord) -> int:
        return self._put("learner", state.key, learner_row(state))

    def apply_retention(self, days: float) -> int:
        return self._put("retention", None, float(days))

    # -- connection management ----------------------------------------------------------------
    def _reconnect_sync(self) -> bool:
        try:
            con = self._connect()
            con.execute("SELECT 1").fetchall()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            logger.error("store: reconnect failed: %s", self.last_error)
            return False
        with self._conn_lock:
            old, self._con = self._con, con
            self._generation += 1
        if old is not None:
            try:
                old.close()
            except Exception:
                pass
        self.reconnects += 1
        logger.info("store: reconnected to %s", self.path)
        self._wake.set()
        return True

    async def reconnect(self) -> bool:
        """Open a new connection (every cursor follows it) and verify it with a query."""
        ok = await asyncio.to_thread(self._reconnect_sync)
        if ok:
            await self.read(lambda cur: cur.execute("SELECT count(*) FROM error_reports").fetchone())
        return ok

    def break_connection(self) -> None:
        """Fault injection: close the live connection as a crashed database link would."""
        with self._conn_lock:
            if self._con is not None:
                self._con.close()

    # -- reads ------------------------------------------------------------------------------------
    def _cursor(self) -> duckdb.DuckDBPyConnection:
        local = self._local
        if getattr(local, "gen", None) != self._generation or local.cur is None:
            with self._conn_lock:
                if self._con is None:
                    raise duckdb.ConnectionException("store connection is closed")
                local.cur, local.gen = self._con.cursor(), self._generation
        return local.cur

    async def read(self, fn: Callable[[Cursor], R]) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, lambda: fn(self._cursor()))

    async def ping(self) -> bool:
        try:
            await self.read(lambda cur: cur.execute("SELECT 1").fetchone())
            return True
        except Exception:
            return False

    def status(self) -> StoreStatus:
        issues = self.watch.issues()
        return StoreStatus(
            ok=self.failing_since is None and self._con is not None and self.watch.healthy,
            path=self.path,
            **self._health_fields(),
            fallback=self.fallback_reason,
            seed_migration=self.seed_migration,
            issues=tuple(issues),
            recreated=self.watch.recreated,
        )
