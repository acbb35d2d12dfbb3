"""The store's writer thread: takes each batch, commits it, releases the waiters, and keeps
retrying (with backoff, buffering newer writes into the same batch) when the database fails."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import duckdb

from coordinator_plugins.error_handling.storage.base import WriteRefused
from coordinator_plugins.error_handling.storage.batch import (
    APPEND_PART,
    Batch,
    GroupWrite,
    chunks,
    occurrence_rows,
    run_statements,
    statements_for,
)
from coordinator_plugins.error_handling.storage.durability import Wake
from coordinator_plugins.error_handling.storage.health import WriteHealth
from coordinator_plugins.error_handling.storage.order import GroupOrder
from coordinator_plugins.error_handling.storage.records import GroupRecord
from coordinator_plugins.error_handling.storage.recreate import FileWatch

logger = logging.getLogger(__name__)
REFUSED_KEPT = 10_000  # refused write numbers remembered for a wait that comes after the commit
__all__ = ["REFUSED_KEPT", "SalvageInterrupted", "WriteRefused", "WriterLoop", "transient"]


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


def duplicate_key(exc: BaseException) -> bool:
    """A primary key or unique constraint was violated (at the statement, or at the commit when a
    concurrent transaction inserted the same key)."""
    return "duplicate key" in str(exc).lower()


class WriterLoop(WriteHealth):
    """Mixed into :class:`DuckDBStore`; runs on its own thread and owns its own cursor."""

    _lock: threading.Lock
    _conn_lock: threading.Lock
    _batch: Batch
    _wake: Wake
    _writer_idle: bool
    _con: duckdb.DuckDBPyConnection | None
    _generation: int
    _stop: bool
    _committed: int
    _groups_committed: int
    _force_groups: int
    _lazy: dict[str, GroupRecord]
    order: GroupOrder
    _lazy_delta: dict[str, int]
    _lazy_seen: dict[str, datetime]
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
    watch: FileWatch
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
        """Write the pending updates of known groups by bisection, dropping (and counting) any the
        database refuses: they are derived from occurrences that are already committed."""
        lazy, delta, seen = self._lazy, self._lazy_delta, self._lazy_seen
        todo = [list({**dict.fromkeys(lazy), **dict.fromkeys(delta)})]
        while todo:
            part = todo.pop()
            if not part:
                continue
            known: list[GroupWrite] = [(lazy[g], delta.get(g, 0), seen.get(g)) for g in part if g in lazy]
            counts = [(g, delta[g], seen[g]) for g in part if g not in lazy and g in delta and g in seen]
            try:
                run_statements(cur, *statements_for(Batch(), [], known, counts))
            except duckdb.Error as err:
                if transient(err):
                    raise
                if len(part) > 1:
                    todo += [part[len(part) // 2 :], part[: len(part) // 2]]
                    continue
                self.dropped_writes += 1
                logger.error("store: dropped the update of group %s, refused: %s", part[0], err)
            for g in part:  # written or dropped: no longer pending
                lazy.pop(g, None)
                delta.pop(g, None)
                seen.pop(g, None)

    def _refuse(self, unit: Batch, err: BaseException) -> None:
        """The database refuses ``unit`` on its data: its waiters fail, nobody else's."""
        reason = f"the database refused the write: {type(err).__name__}: {str(err).splitlines()[0][:300]}"
        seqs = unit.seqs()
        self.dropped_writes += unit.size()
        self.last_error = reason
        with self._lock:
            for seq in seqs:
                if seq:
                    self._refused[seq] = reason
            while len(self._refused) > REFUSED_KEPT:
                del self._refused[next(iter(self._refused))]
        logger.error(
            "store: dropped %d write(s) (seqs %s) that the database refuses: %s", unit.size(), seqs[:10], reason
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
                if self._force_groups > self._groups_committed and self._lazy_pending():
                    b.seq = self._committed  # nothing new: a transaction for the lazy group rows only
                    self._batch = Batch()
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
                if self._batch.seq == 0:
                    # Idle: writes on the loop wake the writer only now (see DuckDBStore._mark);
                    # the flag is up before the last look at the batch, so none is missed.
                    self._writer_idle = True
                    if self._batch.seq == 0:
                        self._wake.wait(0.5)
                    self._writer_idle = False
                self._wake.clear()  # what it signalled is taken below
                if self.watch.check():  # the file was deleted or replaced: now rebuilt
                    cur = None
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
            if not self._lazy_pending():
                self._groups_committed = max(self._groups_committed, batch.seq)
            self.commits += 1
            self.rows_written += batch.size()
            self.failing_since = None
            batch = None
            self._notify()
        if cur is not None:
            cur.close()

    def _lazy_pending(self) -> bool:
        return bool(self._lazy or self._lazy_delta)

    def _write(self, cur: duckdb.DuckDBPyConnection, batch: Batch, lazy: bool = True) -> None:
        if len(batch.new) < len(batch.deltas) or len(batch.new) < len(batch.groups):
            self._defer_known(batch)
        seen = batch.seen
        written = [(g, batch.deltas.get(gid, 0), seen.get(gid)) for gid, g in batch.groups.items()]
        known: list[GroupWrite] = []
        counts: list[tuple[str, int, datetime]] = []
        if lazy and self._lazy_pending() and (
            self._force_groups > self._groups_committed
            or len(self._lazy_delta) + len(self._lazy) > 5000
            or self._stop
            or time.monotonic() - self._lazy_since >= self.group_interval
        ):
            delta, lseen = self._lazy_delta, self._lazy_seen
            known = [(g, delta.get(gid, 0), lseen.get(gid)) for gid, g in self._lazy.items()]
            counts = [(gid, d, lseen[gid]) for gid, d in delta.items() if gid not in self._lazy]
        if batch.occ_id and not written and not known and not counts and not batch.ops and not batch.upserts:
            # The common commit under load: occurrences only. A flush of a long-lived appender in
            # autocommit is one atomic, durable commit and the cheapest call DuckDB offers.
            app = self._appender_for(cur)
            try:
                for part in chunks(occurrence_rows(batch), APPEND_PART):  # (see batch.CHUNK)
                    app.append_rows(part)
                app.flush()
            except BaseException:
                self._appender = None
                raise
            return
        try:
            run_statements(cur, *statements_for(batch, written, known, counts))
        except (duckdb.ConstraintException, duckdb.TransactionException) as exc:
            if not written or not duplicate_key(exc):
                raise
            # another writer of this database inserted one of these groups first: add to it
            run_statements(cur, *statements_for(batch, written, known, counts, upsert=True))
        if written or known or counts:  # the sorted view paging reads (order.py)
            self.order.note([(g, ts) for g, _, ts in written + known], [(gid, ts) for gid, _, ts in counts])
        if known or counts:
            self._lazy.clear()
            self._lazy_delta.clear()
            self._lazy_seen.clear()
            self._groups_committed = max(self._groups_committed, batch.seq)

    def _defer_known(self, batch: Batch) -> None:
        """Groups the table has are written lazily: their latest snapshot, the sum of their
        increments and their latest occurrence move to ``_lazy*`` once (a retry of this batch must
        not count them twice). New groups stay: they are written with their first occurrence."""
        if not self._lazy_pending():
            self._lazy_since = time.monotonic()
        new = batch.new
        keep: dict[str, GroupRecord] = {}
        for gid, g in batch.groups.items():
            if gid in new:
                keep[gid] = g
            else:
                self._lazy[gid] = g
        batch.groups = keep
        deltas: dict[str, int] = {}
        lazy_delta = self._lazy_delta
        for gid, d in batch.deltas.items():
            if gid in new:
                deltas[gid] = d
            else:
                lazy_delta[gid] = lazy_delta.get(gid, 0) + d
        batch.deltas = deltas
        seen: dict[str, datetime] = {}
        for gid, ts in batch.seen.items():
            if gid in new:
                seen[gid] = ts
            else:
                self._lazy_seen[gid] = ts
        batch.seen = seen

    def _appender_for(self, cur: duckdb.DuckDBPyConnection) -> Any:
        if self._appender is None or self._appender_cur is not cur:
            self._appender = cur.appender("error_occurrences")
            self._appender_cur = cur
        return self._appender

    def _failed(self, exc: BaseException) -> None:
        if self._note_failure(exc):
            logger.error("store: write failed, writes are buffered: %s", self.last_error)
            if self.on_error is not None:
                self._on_loop(self.on_error, exc)
