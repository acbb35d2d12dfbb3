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
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import duckdb

from coordinator_plugins.error_handling.model import ErrorReport
from coordinator_plugins.error_handling.schema import (
    GROUP_COLUMNS,
    INSERT_PERF,
    PERF_COLUMNS,
    SCHEMA,
    UPSERT_GROUPS,
    UPSERTS,
    columns_of,
    dumps,
    group_row,
)

logger = logging.getLogger(__name__)
R = TypeVar("R")

Cursor = duckdb.DuckDBPyConnection


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
    ) -> None:
        self.path = path
        self.queue_limit = queue_limit
        self.on_error = on_error
        self.auto_reconnect_after = auto_reconnect_after
        self._con: duckdb.DuckDBPyConnection | None = None
        self._generation = 0
        self._conn_lock = threading.Lock()
        self._ops: deque[tuple[int, str, Any, Any]] = deque()
        self._wake = threading.Event()
        self._stop = False
        self._seq = 0
        self._committed = 0
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

    # -- lifecycle -------------------------------------------------------------------------
    def _connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(
            self.path,
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
        )
        con.execute(SCHEMA)
        return con

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._con = await asyncio.to_thread(self._connect)
        self._writer = threading.Thread(target=self._run_writer, name="eh-store-writer", daemon=True)
        self._writer.start()

    async def close(self) -> None:
        """Flush what is queued, stop the threads, close the database."""
        if self._writer is None:
            return
        try:
            await asyncio.wait_for(self.flush(), timeout=30)
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
    def _put(self, kind: str, key: Any, payload: Any) -> int:
        self._seq += 1
        self._ops.append((self._seq, kind, key, payload))
        self._wake.set()
        return self._seq

    def enqueue_occurrence(self, report: ErrorReport, message: str, metadata: dict[str, Any] | None) -> int:
        if self._occ_pending >= self.queue_limit:
            self.dropped_occurrences += 1  # the group row still carries the count
            return self.enqueue_group(report)
        self._occ_pending += 1
        c = report.context
        row = (report.error_id, report.last_seen, message, c.worker_id, c.task_id, c.hardware_id, metadata)
        self._put("occ", None, row)
        return self._put("group", report.error_id, report)

    def enqueue_group(self, report: ErrorReport) -> int:
        return self._put("group", report.error_id, report)

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
        await self.wait_durable(self._seq)

    def _release_waiters(self) -> None:
        while self._waiters and self._waiters[0][0] <= self._committed:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)

    # -- writer thread ----------------------------------------------------------------------
    def _run_writer(self) -> None:
        cur: duckdb.DuckDBPyConnection | None = None
        gen = -1
        batch: list[tuple[int, str, Any, Any]] = []
        backoff = 0.05
        while True:
            if not batch:
                self._wake.wait(0.5)
                self._wake.clear()
                while self._ops and len(batch) < 50_000:
                    batch.append(self._ops.popleft())
            if not batch:
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
                    logger.error("store: giving up on %d queued writes at shutdown", len(batch))
                    break
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                if self.failing_since and time.monotonic() - self.failing_since > self.auto_reconnect_after:
                    self._reconnect_sync()
                continue
            backoff = 0.05
            occ = sum(1 for op in batch if op[1] == "occ")
            self._occ_pending -= occ
            self._committed = batch[-1][0]
            self.commits += 1
            self.rows_written += len(batch)
            self.failing_since = None
            batch = []
            if self._loop is not None and not self._loop.is_closed():
                try:
                    self._loop.call_soon_threadsafe(self._release_waiters)
                except RuntimeError:
                    pass
        if cur is not None:
            cur.close()

    def _write(self, cur: duckdb.DuckDBPyConnection, batch: list[tuple[int, str, Any, Any]]) -> None:
        occs: list[tuple[Any, ...]] = []
        perfs: list[tuple[Any, ...]] = []
        upserts: dict[str, dict[Any, Any]] = {}
        sqls: list[tuple[str, list[Any]]] = []
        for _, kind, key, payload in batch:
            if kind == "occ":
                e, ts, msg, w, t, h, md = payload
                occs.append((e, ts, msg, w, t, h, dumps(md) if md else None))
            elif kind == "perf":
                perfs.append(payload)
            elif kind == "sql":
                sqls.append(payload)
            else:
                upserts.setdefault(kind, {})[key] = payload
        cur.execute("BEGIN TRANSACTION")
        try:
            groups = upserts.pop("group", None)
            if groups:
                rows = [group_row(r) for r in groups.values()]
                cur.execute(UPSERT_GROUPS, columns_of(rows, len(GROUP_COLUMNS)))
            if occs:
                app = cur.appender("error_occurrences")
                app.append_rows(occs)
                app.flush()
            if perfs:
                cur.execute(INSERT_PERF, columns_of(perfs, len(PERF_COLUMNS)))
            for kind, by_key in upserts.items():
                rows = list(by_key.values())
                cur.execute(UPSERTS[kind], columns_of(rows, len(rows[0])))
            for sql, params in sqls:
                cur.execute(sql, params)
            cur.execute("COMMIT")
        except BaseException:
            try:
                cur.execute("ROLLBACK")
            except Exception:
                pass
            raise

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
            "path": self.path,
            "pending_writes": len(self._ops) + (self._seq - self._committed - len(self._ops)),
            "queued_occurrences": self._occ_pending,
            "dropped_occurrences": self.dropped_occurrences,
            "commits": self.commits,
            "rows_written": self.rows_written,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "failing_for_seconds": (time.monotonic() - self.failing_since) if self.failing_since else 0.0,
        }
