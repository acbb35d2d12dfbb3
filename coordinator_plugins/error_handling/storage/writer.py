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
    Batch,
    occurrence_rows,
    run_statements,
    statements_for,
)

logger = logging.getLogger(__name__)


REFUSED_KEPT = 10_000  # refused write numbers remembered for a wait that comes after the commit


class WriteRefused(ValueError):
    """The database refused this write on its data (the writes that shared its batch were
    committed). Nothing was acknowledged."""


class SalvageInterrupted(Exception):
    """The database failed while a batch was being written in parts; ``rest`` is what was not
    committed yet."""

    def __init__(self, rest: Batch, error: BaseException) -> None:
        super().__init__(str(error))
        self.rest = rest
        self.error = error


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
    _refused: dict[int, str]

    def _release_waiters(self) -> None:
        raise NotImplementedError

    def _salvage(self, cur: duckdb.DuckDBPyConnection, batch: Batch, exc: BaseException) -> None:
        """A batch failed on its data, not on the database: isolate what the database refuses.

        The batch is cut into its independent units (a group with its own occurrences, an upsert,
        an operation) and written by bisection: a part that fails on its data is halved until
        the unit at fault stands alone, so every other unit is committed and only the refused
        unit's own writes fail their waiters (WriteRefused: the client gets an error, never a
        202). The lazy updates of known groups are written first, on their own, so a bad one
        cannot be blamed on a unit. A database failure meanwhile raises SalvageInterrupted with
        what is not yet committed, which the writer retries (nothing committed is written twice)."""
        logger.error("store: a write failed on its data (%s: %s); isolating the bad rows", type(exc).__name__, exc)
        self._salvage_lazy(cur)
        todo: list[list[Batch]] = [batch.units()]
        while todo:
            part = todo.pop()
            try:
                self._write(cur, Batch.merged(part), lazy=False)
            except duckdb.Error as err:
                if transient(err):
                    rest = Batch.merged([u for p in (*todo, part) for u in p])
                    rest.seq = batch.seq
                    raise SalvageInterrupted(rest, err) from err
                if len(part) > 1:
                    mid = len(part) // 2
                    todo.append(part[mid:])
                    todo.append(part[:mid])
                    continue
                self._refuse(part[0], err)

    def _salvage_lazy(self, cur: duckdb.DuckDBPyConnection) -> None:
        """Write the pending updates of known groups, dropping (and counting) any the database
        refuses: they are derived from occurrences that are already committed."""
        todo = [list(self._lazy.values())]
        self._lazy.clear()
        while todo:
            part = todo.pop()
            if not part:
                continue
            try:
                run_statements(cur, *statements_for(Batch(), [], part))
            except duckdb.Error as err:
                if transient(err):
                    for r in (*part, *(r for p in todo for r in p)):
                        self._lazy[r.error_id] = r
                    raise
                if len(part) > 1:
                    todo += [part[len(part) // 2 :], part[: len(part) // 2]]
                    continue
                self.dropped_writes += 1
                logger.error("store: dropped the update of group %s, refused: %s", part[0].error_id, err)

    def _refuse(self, unit: Batch, err: BaseException) -> None:
        """The database refuses ``unit`` on its data: its waiters fail, nobody else's."""
        reason = f"the database refused the write: {type(err).__name__}: {str(err).splitlines()[0][:300]}"
        seqs = unit.seqs()
        self.dropped_writes += unit.size()
        with self._lock:
            for seq in seqs:
                if seq:
                    self._refused[seq] = reason
            while len(self._refused) > REFUSED_KEPT:
                del self._refused[next(iter(self._refused))]
        logger.error("store: dropped %d write(s) (seqs %s) that the database refuses: %s",
                     unit.size(), seqs[:10], reason)

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
                    # nothing new: a transaction for the lazy group rows only. The empty batch is
                    # swapped out all the same: writes queued meanwhile go into the next one,
                    # never into this one after its seq was taken
                    self._batch = Batch()
                    b.seq = self._committed
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
                cause: BaseException = exc
                if isinstance(exc, SalvageInterrupted):
                    with self._lock:
                        self._occ_pending -= len(batch.occ_id) - len(exc.rest.occ_id)  # committed ones
                    batch, cause = exc.rest, exc.error
                self._failed(cause)
                cur = None
                if self._stop and time.monotonic() - (self.failing_since or 0) > 2:
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

    def _write(self, cur: duckdb.DuckDBPyConnection, batch: Batch, lazy: bool = True) -> None:
        written = [r for r in batch.groups.values() if not r.persisted]
        for r in batch.groups.values():
            if r.persisted:
                if not self._lazy:
                    self._lazy_since = time.monotonic()
                self._lazy[r.error_id] = r
        known: list[ErrorReport] = []
        if lazy and self._lazy and (
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
