"""The store's writer thread: takes each batch, commits it, releases the waiters, and keeps
retrying (with backoff, buffering newer writes into the same batch) when the database fails."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import duckdb

from coordinator_plugins.error_handling.model import ErrorReport
from coordinator_plugins.error_handling.storage.batch import (
    OCC_COLUMNS,
    Batch,
    occurrence_rows,
    run_statements,
    statements_for,
)
from coordinator_plugins.error_handling.storage.order import GroupOrder

logger = logging.getLogger(__name__)


def transient(exc: BaseException) -> bool:
    """A failure of the database or its connection (retry later), not of the data written."""
    if isinstance(
        exc,
        duckdb.ConnectionException
        | duckdb.IOException
        | duckdb.InterruptException
        | duckdb.TransactionException
        | duckdb.OutOfMemoryException
        | duckdb.FatalException,
    ):
        return True
    text = str(exc).lower()
    return "closed" in text or "lock" in text


class WriterLoop:
    """Mixed into :class:`DuckDBStore`; runs on its own thread and owns its own cursor."""

    _lock: threading.Lock
    _conn_lock: threading.Lock
    _batch: Batch
    _wake: threading.Event
    _con: duckdb.DuckDBPyConnection | None
    _generation: int
    _stop: bool
    _committed: int
    _groups_committed: int
    _force_groups: int
    _lazy: dict[str, ErrorReport]
    order: GroupOrder
    _lazy_since: float
    _last_commit: float
    _occ_pending: int
    _appender: Any
    _appender_cur: Any
    _loop: asyncio.AbstractEventLoop | None
    group_interval: float
    gather: float
    auto_reconnect_after: float
    on_error: Callable[[BaseException], None] | None
    failing_since: float | None
    last_error: str | None
    commits: int
    rows_written: int

    dropped_writes: int

    def _release_waiters(self) -> None:
        raise NotImplementedError

    def _salvage(self, cur: duckdb.DuckDBPyConnection, batch: Batch, exc: BaseException) -> None:
        """A batch failed on its data, not on the database: write it in parts, so that one bad
        row cannot block every write behind it. A part that fails on its own data is dropped,
        logged and counted; a database failure meanwhile propagates and the batch is retried."""
        logger.error("store: a write failed on its data (%s: %s); writing the batch in parts", type(exc).__name__, exc)
        core = Batch()
        for name in OCC_COLUMNS:
            setattr(core, name, getattr(batch, name))
        core.groups = batch.groups
        pieces = [core]
        for kind, by_key in batch.upserts.items():
            for key, row in by_key.items():
                piece = Batch()
                piece.upserts = {kind: {key: row}}
                pieces.append(piece)
        for op in batch.ops:
            piece = Batch()
            piece.ops = [op]
            pieces.append(piece)
        for piece in pieces:
            try:
                self._write(cur, piece)
            except duckdb.Error as err:
                if transient(err):
                    raise
                self.dropped_writes += piece.size()
                logger.error(
                    "store: dropped %d write(s) that the database refuses: %s: %s",
                    piece.size(),
                    type(err).__name__,
                    err,
                )

    def _reconnect_sync(self) -> bool:
        raise NotImplementedError

    # -- writer thread ----------------------------------------------------------------------
    def _take(self, real_only: bool = False) -> Batch | None:
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
            self._batch = Batch()
            return b

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the event loop (from the writer thread), unless it is gone."""
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # closed meanwhile
                pass

    def _notify(self) -> None:
        self._on_loop(self._release_waiters)

    def _run_writer(self) -> None:
        cur: duckdb.DuckDBPyConnection | None = None
        gen = -1
        batch: Batch | None = None
        backoff = 0.05
        while True:
            if batch is None:
                self._wake.wait(0.5)
                self._wake.clear()
                if self.gather and len(self._batch.occ_id) < 512 and time.monotonic() - self._last_commit < 0.01:
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
                try:
                    self._write(cur, batch)
                except duckdb.Error as exc:
                    if transient(exc):
                        raise
                    self._salvage(cur, batch, exc)
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

    def _write(self, cur: duckdb.DuckDBPyConnection, batch: Batch) -> None:
        written = [r for r in batch.groups.values() if not r.persisted]
        for r in batch.groups.values():
            if r.persisted:
                if not self._lazy:
                    self._lazy_since = time.monotonic()
                self._lazy[r.error_id] = r
        known: list[ErrorReport] = []
        if self._lazy and (
            self._force_groups > self._groups_committed
            or len(self._lazy) > 5000
            or self._stop
            or time.monotonic() - self._lazy_since >= self.group_interval
        ):
            known = list(self._lazy.values())
        if batch.occ_id and not written and not known and not batch.ops and not batch.upserts:
            # The common commit under load: occurrences only. A flush of a long-lived appender in
            # autocommit is one atomic, durable commit and the cheapest call DuckDB offers.
            app = self._appender_for(cur)
            try:
                app.append_rows(occurrence_rows(batch))
                app.flush()
            except BaseException:
                self._appender = None
                raise
            return
        run_statements(cur, *statements_for(batch, written, known))
        for r in written:
            r.persisted = True
        if written or known:
            self.order.note(written + known)  # the sorted view paging reads (order.py)
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
            if self.on_error is not None:
                self._on_loop(self.on_error, exc)
