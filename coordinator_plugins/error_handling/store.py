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
from coordinator_plugins.error_handling.schema import (
    GROUP_COLUMNS,
    INSERT_OCCURRENCES,
    INSERT_PERF,
    PERF_COLUMNS,
    SCHEMA,
    UPDATE_COLUMNS,
    UPDATE_GROUPS,
    UPSERT_GROUPS,
    UPSERTS,
    columns_of,
    dumps,
    group_row,
    update_row,
)

logger = logging.getLogger(__name__)
R = TypeVar("R")

Cursor = duckdb.DuckDBPyConnection


CHUNK = 1000
SMALL_BATCH = 2000


def _chunks(rows: list[Any], size: int = CHUNK) -> Any:
    """Yield slices of ``rows``, releasing the GIL between them: converting a large parameter
    list holds the GIL inside DuckDB, and the event loop's thread must not wait on it for long."""
    for i in range(0, len(rows), size):
        if i:
            time.sleep(0)
        yield rows[i : i + size]


class StoreUnavailable(RuntimeError):
    """The database cannot be opened (locked by another process, unreadable, ...)."""


class _Batch:
    """Writes gathered between two commits."""

    __slots__ = ("groups", "occ_hw", "occ_id", "occ_md", "occ_msg", "occ_task", "occ_ts", "occ_worker", "ops",
                 "seq", "upserts")

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

    def absorb(self, newer: _Batch) -> None:
        for name in ("occ_id", "occ_ts", "occ_msg", "occ_worker", "occ_task", "occ_hw", "occ_md", "ops"):
            getattr(self, name).extend(getattr(newer, name))
        self.groups.update(newer.groups)
        for kind, rows in newer.upserts.items():
            self.upserts.setdefault(kind, {}).update(rows)
        self.seq = newer.seq


class Store(Protocol):
    """What the plugin needs from persistence. A PostgreSQL store would implement the same."""

    def enqueue_occurrence(self, report: ErrorReport, message: str, metadata: dict[str, Any] | None) -> int: ...
    def enqueue_group(self, report: ErrorReport) -> int: ...
    def enqueue_upsert(self, kind: str, key: Any, row: tuple[Any, ...]) -> int: ...
    def enqueue_performance(self, row: tuple[Any, ...]) -> int: ...
    async def wait_durable(self, seq: int) -> None: ...
    async def flush(self) -> None: ...
    async def read(self, fn: Callable[[Cursor], R]) -> R: ...
    async def reconnect(self) -> bool: ...
    def status(self) -> dict[str, Any]: ...


class DuckDBStore:
    """The embedded store. Start with :meth:`open` (on the loop) and stop with :meth:`close`."""

    def __init__(
        self,
        path: str,
        queue_limit: int = 200_000,
        on_error: Callable[[BaseException], None] | None = None,
        auto_reconnect_after: float = 10.0,
        group_interval: float = 0.2,
        gather: float = 0.002,
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
        self._batch = _Batch()
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: threading.Thread | None = None
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eh-store-read")
        self._local = threading.local()
        self._occ_pending = 0
        self.dropped_occurrences = 0
        self.commits = 0
        self.rows_written = 0
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self.reconnects = 0
        self.fallback_reason: str | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def _connect(self) -> duckdb.DuckDBPyConnection:
        # DuckDB's buffer cache may otherwise grow to most of the machine's memory: bound it, as a
        # plugin living in someone else's process should (it spills to disk beyond the limit).
        con = duckdb.connect(
            self.path,
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False,
                    "memory_limit": f"{self.memory_mb}MB"},
        )
        con.execute(SCHEMA)
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
            logger.error("error handling: cannot open %s (%s); falling back to an in-memory database: "
                         "nothing will survive a restart", self.path, reason)
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

    # -- writes (called on the loop; never block) -----------------------------------------
    # Occurrences are buffered column-wise (lists of untracked atoms, so a storm does not fill
    # the garbage collector's old generation), groups as a map of dirty reports, and the rarer
    # writes as a list of operations. The writer swaps all three out under a short lock.
    def _new_batch(self) -> _Batch:
        return _Batch()

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

    @property
    def last_seq(self) -> int:
        return self._seq

    async def wait_durable(self, seq: int) -> None:
        if seq <= self._committed:
            return
        if self._writer is None:
            raise ConnectionError("store is not open")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (seq, id(fut), fut))
        await fut

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

    # -- writer thread ----------------------------------------------------------------------
    def _take(self, real_only: bool = False) -> _Batch | None:
        with self._lock:
            b = self._batch
            if b.seq == 0:
                if real_only:
                    return None
                if self._force_groups > self._groups_committed and self._lazy:
                    b.seq = self._committed  # nothing new: a transaction for the lazy group rows only
                    return b
                if self._force_groups > self._groups_committed:
                    self._groups_committed = self._force_groups  # nothing was pending
                    self._notify()
                return None
            self._batch = _Batch()
            return b

    def _notify(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._release_waiters)
            except RuntimeError:
                pass

    def _run_writer(self) -> None:
        cur: duckdb.DuckDBPyConnection | None = None
        gen = -1
        batch: _Batch | None = None
        backoff = 0.05
        while True:
            if batch is None:
                self._wake.wait(0.5)
                self._wake.clear()
                if (self.gather and len(self._batch.occ_id) < 512
                        and time.monotonic() - self._last_commit < 0.01):
                    # In a burst (the last commit was moments ago), wait a little so that one
                    # commit carries many reports: group commit, as PostgreSQL's commit_delay.
                    time.sleep(self.gather)
                batch = self._take()
            if batch is None:
                if self._stop:
                    break
                continue
            try:
                if cur is None or gen != self._generation:
                    with self._conn_lock:
                        if self._con is None:
                            raise duckdb.ConnectionException("store connection is closed")
                        cur, gen = self._con.cursor(), self._generation
                self._write(cur, batch)
            except Exception as exc:
                self._failed(exc)
                cur = None
                if self._stop and time.monotonic() - (self.failing_since or 0) > 5:
                    logger.error("store: giving up on %d queued writes at shutdown", batch.size())
                    break
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                if self.failing_since and time.monotonic() - self.failing_since > self.auto_reconnect_after:
                    self._reconnect_sync()
                # Fold newer writes into the failed batch, so the retry commits them together.
                newer = self._take(real_only=True)
                if newer is not None:
                    batch.absorb(newer)
                continue
            backoff = 0.05
            with self._lock:
                self._occ_pending -= len(batch.occ_id)
            self._committed = max(self._committed, batch.seq)
            self._last_commit = time.monotonic()
            if not self._lazy:
                self._groups_committed = max(self._groups_committed, batch.seq)
            self.commits += 1
            self.rows_written += batch.size()
            self.failing_since = None
            batch = None
            self._notify()
        if cur is not None:
            cur.close()

    def _write(self, cur: duckdb.DuckDBPyConnection, batch: _Batch) -> None:
        written = [r for r in batch.groups.values() if not r.persisted]
        for r in batch.groups.values():
            if r.persisted:
                if not self._lazy:
                    self._lazy_since = time.monotonic()
                self._lazy[r.error_id] = r
        known: list[ErrorReport] = []
        if self._lazy and (self._force_groups > self._groups_committed or len(self._lazy) > 5000 or self._stop
                           or time.monotonic() - self._lazy_since >= self.group_interval):
            known = list(self._lazy.values())
        # Each DuckDB call must win the GIL back from the event loop's thread, so the statements
        # are few: occurrences go in one INSERT (the appender only for large batches), and a batch
        # that is a single statement runs in autocommit, which is atomic, with no BEGIN/COMMIT.
        statements: list[tuple[str, Any]] = []
        for part in _chunks(written):
            statements.append((UPSERT_GROUPS, columns_of([group_row(r) for r in part], len(GROUP_COLUMNS))))
        for part in _chunks(known):
            statements.append((UPDATE_GROUPS, columns_of([update_row(r) for r in part], len(UPDATE_COLUMNS))))
        big: list[tuple[Any, ...]] = []
        if batch.occ_id and not statements and not batch.ops and not batch.upserts:
            # The common commit under load: occurrences only. A flush of a long-lived appender in
            # autocommit is one atomic, durable commit and the cheapest call DuckDB offers.
            md = [dumps(m) if m else None for m in batch.occ_md]
            rows = list(zip(batch.occ_id, batch.occ_ts, batch.occ_msg, batch.occ_worker, batch.occ_task,
                            batch.occ_hw, md, strict=True))
            app = self._appender_for(cur)
            try:
                app.append_rows(rows)
                app.flush()
            except BaseException:
                self._appender = None
                raise
            return
        if batch.occ_id:
            md = [dumps(m) if m else None for m in batch.occ_md]
            if len(batch.occ_id) <= SMALL_BATCH:
                statements.append((INSERT_OCCURRENCES, [batch.occ_id, batch.occ_ts, batch.occ_msg, batch.occ_worker,
                                                        batch.occ_task, batch.occ_hw, md]))
            else:
                big = list(zip(batch.occ_id, batch.occ_ts, batch.occ_msg, batch.occ_worker, batch.occ_task,
                               batch.occ_hw, md, strict=True))
        perfs = [p for k, p in batch.ops if k == "perf"]
        if perfs:
            statements.append((INSERT_PERF, columns_of(perfs, len(PERF_COLUMNS))))
        for kind, by_key in batch.upserts.items():
            rows = list(by_key.values())
            statements.append((UPSERTS[kind], columns_of(rows, len(rows[0]))))
        statements.extend(payload for kind, payload in batch.ops if kind == "sql")
        if len(statements) == 1 and not big:
            cur.execute(*statements[0])
        elif statements or big:
            cur.execute("BEGIN TRANSACTION")
            try:
                for sql, params in statements:
                    cur.execute(sql, params)
                if big:
                    app = cur.appender("error_occurrences")
                    for part in _chunks(big, 2000):
                        app.append_rows(part)
                    app.flush()
                cur.execute("COMMIT")
            except BaseException:
                try:
                    cur.execute("ROLLBACK")
                except Exception:
                    pass
                raise
        for r in written:
            r.persisted = True
        if known:
            self._lazy.clear()
            self._groups_committed = max(self._groups_committed, batch.seq)

    def _appender_for(self, cur: duckdb.DuckDBPyConnection) -> Any:
        if self._appender is None or self._appender_cur is not cur:
            self._appender = cur.appender("error_occurrences")
            self._appender_cur = cur
        return self._appender

    def _failed(self, exc: BaseException) -> None:
        first = self.failing_since is None
        if first:
            self.failing_since = time.monotonic()
        self.last_error = f"{type(exc).__name__}: {exc}"
        if first:
            logger.error("store: write failed, writes are buffered: %s", self.last_error)
            if self.on_error is not None and self._loop is not None and not self._loop.is_closed():
                try:
                    self._loop.call_soon_threadsafe(self.on_error, exc)
                except RuntimeError:
                    pass

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

    def status(self) -> dict[str, Any]:
        return {
            "ok": self.failing_since is None and self._con is not None,
            "fallback": self.fallback_reason,
            "path": self.path,
            "pending_writes": self._seq - self._committed,
            "queued_occurrences": self._occ_pending,
            "dropped_occurrences": self.dropped_occurrences,
            "commits": self.commits,
            "rows_written": self.rows_written,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "failing_for_seconds": (time.monotonic() - self.failing_since) if self.failing_since else 0.0,
        }
