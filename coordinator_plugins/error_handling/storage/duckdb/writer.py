"""The DuckDB store's writer thread: takes each batch, commits it, releases the waiters, and keeps
retrying (with backoff, buffering newer writes into the same batch) when the database fails."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import duckdb

from coordinator_plugins.error_handling.storage.duckdb.batch import (
    APPEND_PART,
    GroupWrite,
    WriteBatch,
    chunks,
    occurrence_rows,
    run_statements,
    statements_for,
)
from coordinator_plugins.error_handling.storage.duckdb.database import Cursor, Database, invalidated
from coordinator_plugins.error_handling.storage.duckdb.held import cannot_write_fix
from coordinator_plugins.error_handling.storage.duckdb.lazy import LazyGroups
from coordinator_plugins.error_handling.storage.duckdb.order import GroupOrder
from coordinator_plugins.error_handling.storage.duckdb.queue import WriteQueue
from coordinator_plugins.error_handling.storage.duckdb.recreate import FileWatch
from coordinator_plugins.error_handling.storage.duckdb.waits import Durability
from coordinator_plugins.error_handling.storage.health import Health

logger = logging.getLogger(__name__)
__all__ = ["SalvageInterrupted", "Writer", "transient"]


class SalvageInterrupted(Exception):
    """The database failed while a batch was being written in parts; ``rest`` is what was not
    committed yet."""

    def __init__(self, rest: WriteBatch, error: BaseException) -> None:
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


class Writer:
    """Commits what ``queue`` gathers to ``database``, on a thread of its own; reports progress to
    ``durability`` and failures to ``health`` (and once, on the loop, to ``on_error``). After
    failing for ``auto_reconnect_after`` seconds it calls ``reconnect``; every second or so it
    lets ``watch`` look at the file."""

    def __init__(
        self,
        database: Database,
        queue: WriteQueue,
        durability: Durability,
        health: Health,
        order: GroupOrder,
        watch: FileWatch,
        reconnect: Callable[[], bool],
        on_error: Callable[[BaseException], None] | None = None,
        gather: float = 0.0,
        group_interval: float = 0.2,
        auto_reconnect_after: float = 10.0,
    ) -> None:
        self.database = database
        self.queue = queue
        self.durability = durability
        self.health = health
        self.order = order  # the sorted view paging reads, kept up with every group row committed
        self.watch = watch
        self.reconnect = reconnect
        self.on_error = on_error
        self.gather = gather
        self.auto_reconnect_after = auto_reconnect_after
        self.lazy = LazyGroups(group_interval)
        self._stop = False
        self._thread: threading.Thread | None = None
        self._last_commit = 0.0
        self._appender: Any = None
        self._appender_cur: Any = None
        self._hold: threading.Event | None = None  # set: the writer may take batches again
        self._parked = threading.Event()  # the held writer asked for a batch: none of its is in flight

    # -- lifecycle (on the loop) -----------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="eh-store-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Ask the thread to finish what is queued and end; wait up to ``timeout`` s (blocking)."""
        self._stop = True
        self.queue.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    @contextmanager
    def held(self, timeout: float) -> Iterator[threading.Event]:
        """While inside, the writer commits nothing: the writes stay queued (for tests of what
        waits for a commit). Entered once no batch of the writer's is in flight (AssertionError
        after ``timeout`` s); set the event it yields, or leave the block, to let it go."""
        self._parked.clear()
        release = self._hold = threading.Event()
        try:
            self.queue.wake.set()
            assert self._parked.wait(timeout), "the writer never came back to take a batch"
            yield release
        finally:
            release.set()
            self._hold = None
            self.queue.wake.set()

    # -- the thread ---------------------------------------------------------------------------------
    def _take(self, real_only: bool = False) -> WriteBatch | None:
        """The next batch to commit: what was queued, else (unless ``real_only``) an empty batch
        that carries the lazy group rows a flush waits for."""
        hold = self._hold
        if hold is not None and not hold.is_set():
            self._parked.set()
            # Held: the writer finds nothing to take, and (writes being queued) looks again at
            # once; a short wait here keeps it from spinning on the GIL against the event loop.
            time.sleep(0.002)
            return None
        b = self.queue.take()
        if b is not None or real_only:
            return b
        d = self.durability
        if d.group_rows_wanted():
            if self.lazy.pending():
                b = WriteBatch()
                b.seq = d.committed  # nothing new: a transaction for the lazy group rows only
                return b
            d.groups_committed = d.forced  # nothing was pending
            d.notify()
        return None

    def _run(self) -> None:
        q, d, db = self.queue, self.durability, self.database
        batch: WriteBatch | None = None
        backoff = 0.05
        while True:
            if batch is None:
                if q.empty():
                    # Idle: writes on the loop wake the writer only now (see WriteQueue._mark);
                    # the flag is up before the last look at the batch, so none is missed.
                    q.writer_idle = True
                    if q.empty():
                        q.wake.wait(0.5)
                    q.writer_idle = False
                q.wake.clear()  # what it signalled is taken below
                self.watch.check()  # a file deleted or replaced is rebuilt (a new connection)
                if self.gather and q.gathered() < 512 and time.monotonic() - self._last_commit < 0.01:
                    # In a burst (the last commit was moments ago), wait a little so that one
                    # commit carries many reports: group commit, as PostgreSQL's commit_delay.
                    time.sleep(self.gather)
                batch = self._take()
            if batch is None:
                if self._stop:
                    break
                continue
            try:
                cur = db.cursor()
                try:
                    self._write(cur, batch)
                except duckdb.Error as exc:
                    if transient(exc):
                        raise
                    self.salvage(cur, batch, exc)
            except Exception as exc:
                cause: BaseException = exc
                if isinstance(exc, SalvageInterrupted):
                    q.written(len(batch.occ_id) - len(exc.rest.occ_id))  # the committed ones
                    batch, cause = exc.rest, exc.error
                self._failed(cause)
                db.forget_cursor()
                if self._stop and time.monotonic() - (self.health.failing_since or 0) > 2:
                    logger.error("store: giving up on %d queued writes at shutdown", batch.size())
                    break
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                if invalidated(cause) or not db.is_open or (
                    self.health.failing_since
                    and time.monotonic() - self.health.failing_since > self.auto_reconnect_after
                ):
                    # an invalidated instance never works again: a new one from the file, now
                    # (paced by the backoff, at most every 2 s), not after auto_reconnect_after
                    self.reconnect()
                # Fold newer writes into the failed batch, so the retry commits them together.
                newer = self._take(real_only=True)
                if newer is not None:
                    batch.absorb(newer)
                continue
            backoff = 0.05
            q.written(len(batch.occ_id))
            d.committed = max(d.committed, batch.seq)
            self._last_commit = time.monotonic()
            if not self.lazy.pending():
                d.groups_committed = max(d.groups_committed, batch.seq)
            self.health.committed(batch.size())
            batch = None
            d.notify()
        db.forget_cursor()

    def _write(self, cur: Cursor, batch: WriteBatch, lazy: bool = True) -> None:
        if len(batch.new) < len(batch.deltas) or len(batch.new) < len(batch.groups):
            self.lazy.defer(batch)
        seen = batch.seen
        written = [(g, batch.deltas.get(gid, 0), seen.get(gid)) for gid, g in batch.groups.items()]
        known: list[GroupWrite] = []
        counts: list[tuple[str, int, datetime]] = []
        if lazy and self.lazy.due(self.durability.group_rows_wanted(), self._stop):
            known, counts = self.lazy.rows()
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
            self.lazy.clear()
            self.durability.groups_committed = max(self.durability.groups_committed, batch.seq)

    def _appender_for(self, cur: Cursor) -> Any:
        if self._appender is None or self._appender_cur is not cur:
            self._appender = cur.appender("error_occurrences")
            self._appender_cur = cur
        return self._appender

    def _failed(self, exc: BaseException) -> None:
        first = self.health.failed(exc)
        if self.health.last_error is not None:  # a full disk or a permission: diagnostics names the fix
            self.health.last_error += cannot_write_fix(self.health.last_error, self.database.path)
        if first:
            logger.error("store: write failed, writes are buffered: %s", self.health.last_error)
            loop = self.queue.loop
            if self.on_error is not None and loop is not None and not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(self.on_error, exc)
                except RuntimeError:  # closed meanwhile
                    pass

    # -- a batch the database refuses ----------------------------------------------------------------
    def salvage(self, cur: Cursor, batch: WriteBatch, exc: BaseException) -> None:
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
        todo: list[list[WriteBatch]] = [batch.units()]
        while todo:
            part = todo.pop()
            try:
                self._write(cur, WriteBatch.merged(part), lazy=False)
            except duckdb.Error as err:
                if transient(err):
                    rest = WriteBatch.merged([u for p in (*todo, part) for u in p])
                    rest.seq = batch.seq
                    raise SalvageInterrupted(rest, err) from err
                if len(part) > 1:
                    mid = len(part) // 2
                    todo.append(part[mid:])
                    todo.append(part[:mid])
                    continue
                self._refuse(part[0], err)

    def _salvage_lazy(self, cur: Cursor) -> None:
        """Write the pending updates of known groups by bisection, dropping (and counting) any the
        database refuses: they are derived from occurrences that are already committed."""
        todo = [self.lazy.ids()]
        while todo:
            part = todo.pop()
            if not part:
                continue
            known, counts = self.lazy.rows(part)
            try:
                run_statements(cur, *statements_for(WriteBatch(), [], known, counts))
            except duckdb.Error as err:
                if transient(err):
                    raise
                if len(part) > 1:
                    todo += [part[len(part) // 2 :], part[: len(part) // 2]]
                    continue
                self.health.dropped_writes += 1
                logger.error("store: dropped the update of group %s, refused: %s", part[0], err)
            self.lazy.drop(part)  # written or dropped: no longer pending

    def _refuse(self, unit: WriteBatch, err: BaseException) -> None:
        """The database refuses ``unit`` on its data: its waiters fail, nobody else's."""
        reason = f"the database refused the write: {type(err).__name__}: {str(err).splitlines()[0][:300]}"
        seqs = unit.seqs()
        self.health.dropped_writes += unit.size()
        self.health.last_error = reason
        self.durability.refuse(seqs, reason)
        logger.error(
            "store: dropped %d write(s) (seqs %s) that the database refuses: %s", unit.size(), seqs[:10], reason
        )
