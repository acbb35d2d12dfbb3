"""Persistence behind one small interface; DuckDB is the embedded default.

DuckDB never runs on the event loop: one writer thread with its own cursor batches every
write into one transaction (group commit), and reads run on a reader thread with its own
cursor. ``wait_durable(seq)`` resolves when the write numbered ``seq`` is committed.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import duckdb

from coordinator_plugins.error_handling.model import ErrorReport
from coordinator_plugins.error_handling.storage.batch import Batch, chunks
from coordinator_plugins.error_handling.storage.order import GroupOrder
from coordinator_plugins.error_handling.storage.schema import SCHEMA, UPSERTS, group_row
from coordinator_plugins.error_handling.storage.seed_migration import migrate_seed_database
from coordinator_plugins.error_handling.storage.writer import WriterLoop

logger = logging.getLogger(__name__)
R = TypeVar("R")
SWEEP_INTERVAL = 0.25  # how often the deadlines of durability waits are checked (s)

Cursor = duckdb.DuckDBPyConnection


class StoreUnavailable(RuntimeError):
    """The database cannot be opened (locked by another process, unreadable, ...)."""


class Store(Protocol):
    """What the plugin needs from persistence. A PostgreSQL store would implement the same."""

    def enqueue_occurrence(self, report: ErrorReport, message: str, metadata: dict[str, Any] | None) -> int: ...
    def enqueue_group(self, report: ErrorReport) -> int: ...
    def enqueue_upsert(self, kind: str, key: Any, row: tuple[Any, ...]) -> int: ...
    def enqueue_performance(self, row: tuple[Any, ...]) -> int: ...
    async def wait_durable(self, seq: int, timeout: float | None = None) -> None: ...
    async def flush(self) -> None: ...
    async def read(self, fn: Callable[[Cursor], R]) -> R: ...
    async def find_groups(
        self, fingerprints: list[str]
    ) -> dict[str, tuple[ErrorReport, tuple[Any, ...] | None]]: ...
    async def reconnect(self) -> bool: ...
    def status(self) -> dict[str, Any]: ...


class DuckDBStore(WriterLoop):
    """The embedded store. Start with :meth:`open` (on the loop) and stop with :meth:`close`."""

    def __init__(
        self,
        path: str,
        queue_limit: int = 200_000,
        on_error: Callable[[BaseException], None] | None = None,
        auto_reconnect_after: float = 10.0,
        group_interval: float = 0.2,
        gather: float = 0.001,
        memory_mb: int = 64,
    ) -> None:
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
        self._wake = threading.Event()
        self._stop = False
        self._seq = 0
        self._committed = 0
        # Rows of groups already in the table are written lazily (they are derived from the
        # occurrences, which are always durable first): at most every ``group_interval`` seconds,
        # and whenever flush() asks. ``_groups_committed`` is the seq through which they are.
        self.group_interval = group_interval
        self._lazy: dict[str, ErrorReport] = {}
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
        self.order = GroupOrder()  # every group's (last_seen, error_id), for paging (see order.py)

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
            con.execute(SCHEMA)
        except BaseException:
            con.close()  # or the file stays open, and locked, until the garbage collector runs
            raise
        return con

    async def open(self, fallback_to_memory: bool = False) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            self._con = await asyncio.to_thread(self._connect)
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
        self._writer = threading.Thread(target=self._run_writer, name="eh-store-writer", daemon=True)
        self._writer.start()

    async def close(self) -> None:
        """Flush what is queued, stop the threads, close the database."""
        if self._writer is None:
            return
        try:
            async with asyncio.timeout(30):
                await self.flush()
        except TimeoutError:
            logger.error("store: pending writes could not be flushed within 30 s (%s)", self.last_error)
        self._stop = True
        self._wake.set()
        await asyncio.to_thread(self._writer.join, 10)
        self._reader.shutdown(wait=True)
        with self._conn_lock:
            if self._con is not None:
                self._con.close()
                self._con = None
        self._writer = None
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(ConnectionError("store closed before the write was durable"))
        self._waiters.clear()
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
        if not self._wake.is_set():
            self._wake.set()
        return self._seq

    def enqueue_occurrence(self, report: ErrorReport, message: str, metadata: dict[str, Any] | None) -> int:
        with self._lock:
            b = self._batch
            if self._occ_pending >= self.queue_limit:
                self.dropped_occurrences += 1  # the group row still carries the count
            else:
                self._occ_pending += 1
                c = report.context
                b.occ_id.append(report.error_id)
                b.occ_ts.append(report.last_seen)
                b.occ_msg.append(message)
                b.occ_worker.append(c.worker_id)
                b.occ_task.append(c.task_id)
                b.occ_hw.append(c.hardware_id)
                b.occ_md.append(metadata or None)
            b.groups[report.error_id] = report
            return self._mark()

    def enqueue_group(self, report: ErrorReport) -> int:
        with self._lock:
            self._batch.groups[report.error_id] = report
            return self._mark()

    def _put(self, kind: str, key: Any, payload: Any) -> int:
        with self._lock:
            if kind in UPSERTS:
                self._batch.upserts.setdefault(kind, {})[key] = payload
            else:
                self._batch.ops.append((kind, payload))
            return self._mark()

    def enqueue_upsert(self, kind: str, key: Any, row: tuple[Any, ...]) -> int:
        if kind not in UPSERTS:
            raise ValueError(f"unknown upsert kind {kind!r}")
        return self._put(kind, key, row)

    def enqueue_performance(self, row: tuple[Any, ...]) -> int:
        return self._put("perf", None, row)

    def enqueue_sql(self, sql: str, params: list[Any] | None = None) -> int:
        return self._put("sql", None, (sql, params or []))

    async def wait_durable(self, seq: int, timeout: float | None = None) -> None:
        """Return once the write numbered ``seq`` is committed. TimeoutError when it is not
        within ``timeout`` seconds (checked every SWEEP_INTERVAL, so up to that much later);
        ConnectionError when the store closes first."""
        if seq <= self._committed:
            return
        if self._writer is None or self._loop is None:
            raise ConnectionError("store is not open")
        fut: asyncio.Future[None] = self._loop.create_future()
        heapq.heappush(self._waiters, (seq, id(fut), fut))
        if timeout is not None:
            heapq.heappush(self._deadlines, (time.monotonic() + timeout, id(fut), fut))
            if self._sweeper is None:
                self._sweeper = self._loop.call_later(SWEEP_INTERVAL, self._sweep)
        await fut

    def _sweep(self) -> None:
        """Fail the waits whose deadline passed; forget the ones already released."""
        self._sweeper = None
        now = time.monotonic()
        dl = self._deadlines
        while dl and (dl[0][2].done() or dl[0][0] <= now):
            _, _, fut = heapq.heappop(dl)
            if not fut.done():
                fut.set_exception(TimeoutError(f"write not durable in time (last error: {self.last_error})"))
        if dl and self._loop is not None and not self._loop.is_closed():
            self._sweeper = self._loop.call_later(SWEEP_INTERVAL, self._sweep)

    async def flush(self) -> None:
        """Wait until everything queued so far, group rows included, is committed."""
        seq = self._seq
        if seq <= self._groups_committed:
            return
        if self._writer is None:
            raise ConnectionError("store is not open")
        self._force_groups = max(self._force_groups, seq)
        self._wake.set()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._flush_waiters, (seq, id(fut), fut))
        await fut

    def _release_waiters(self) -> None:
        for waiters, done in ((self._waiters, self._committed), (self._flush_waiters, self._groups_committed)):
            while waiters and waiters[0][0] <= done:
                _, _, fut = heapq.heappop(waiters)
                if not fut.done():
                    fut.set_result(None)

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

    async def find_groups(self, fingerprints: list[str]) -> dict[str, tuple[ErrorReport, tuple[Any, ...] | None]]:
        """fingerprint -> (its stored group, open first; its level row) for those the store holds,
        on the reader thread, by the index on the fingerprint: how a miss in memory stays exact."""
        from coordinator_plugins.error_handling.storage.queries import find_groups

        return await self.read(lambda cur: find_groups(cur, fingerprints))

    async def list_groups(
        self,
        status: str = "open",
        component: str | None = None,
        min_rank: int | None = None,
        error_type: str | None = None,
        limit: int = 100,
        after: tuple[str, str] | None = None,
    ) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
        """A page of groups, newest last_seen first, and the cursor of the next (keyset paging
        through the store's sorted view; pending writes are flushed first)."""
        from coordinator_plugins.error_handling.storage.queries import list_groups

        await self.flush()
        return await self.read(
            lambda cur: list_groups(cur, self.order, status, component, min_rank, error_type, limit, after)
        )

    async def bulk_load(self, groups: list[ErrorReport], occurrences: list[tuple[Any, ...]]) -> None:
        """Append groups (full rows) and occurrences (rows of error_occurrences) in one
        transaction through DuckDB's appender, off the loop: imports and benchmarks."""

        def load(cur: Cursor) -> None:
            cur.execute("BEGIN TRANSACTION")
            try:
                for table, rows in (("error_reports", [group_row(r) for r in groups]),
                                    ("error_occurrences", occurrences)):
                    if rows:
                        app = cur.appender(table)
                        for part in chunks(rows, 50_000):
                            app.append_rows(part)
                        app.flush()
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            for r in groups:
                r.persisted = True
            self.order.note(groups)

        await self.read(load)

    async def ping(self) -> bool:
        try:
            await self.read(lambda cur: cur.execute("SELECT 1").fetchone())
            return True
        except Exception:
            return False

    def status(self) -> dict[str, Any]:
        return {
            "ok": self.failing_since is None and self._con is not None,
            "fallback": self.fallback_reason,
            "path": self.path,
            "pending_writes": self._seq - self._committed,
            "queued_occurrences": self._occ_pending,
            "dropped_occurrences": self.dropped_occurrences,
            "dropped_writes": self.dropped_writes,
            "commits": self.commits,
            "rows_written": self.rows_written,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "seed_migration": self.seed_migration,
            "failing_for_seconds": (time.monotonic() - self.failing_since) if self.failing_since else 0.0,
        }
