"""The DuckDB store's one database: shared by the store, its writer, its reads and its file watch.

It opens the file (converting one the seed framework wrote with the store's seed hook, then
applying the numbered migrations), reopens and closes it, and hands every thread its own cursor.
Each new connection is a new *generation*: a thread's cursor of an older one is replaced the next
time the thread asks for one, so nobody else ever holds the connection itself.

DuckDB allows one connection per thread at a time, and never on the event loop: every method
here blocks, and runs on the store's writer or reader thread (or in ``asyncio.to_thread``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb

from coordinator_plugins.error_handling.storage.duckdb.held import ours
from coordinator_plugins.error_handling.storage.duckdb.migrations import migrate
from coordinator_plugins.error_handling.storage.duckdb.seed import migrate_seed_database
from coordinator_plugins.error_handling.storage.seedhook import SeedHook

logger = logging.getLogger(__name__)
MEMORY = ":memory:"

Cursor = duckdb.DuckDBPyConnection


def invalidated(exc: BaseException) -> bool:
    """DuckDB invalidated the database instance (a checkpoint or commit failed fatally: a full
    disk, memory_limit): no connection to that instance works again, only a new instance does."""
    return isinstance(exc, duckdb.FatalException) or "invalidated" in str(exc).lower()


class Database:
    """One DuckDB database file (or ``:memory:``) and its connection."""

    def __init__(self, path: str, memory_mb: int = 64, seed: SeedHook | None = None) -> None:
        self.path = path
        self.memory_mb = memory_mb
        self.seed = seed
        self.generation = 0  # grows with every new connection
        self.schema_version = 0
        self.seed_migration: dict[str, Any] | None = None  # what converting a seed-written file did
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        ours(self)  # the file it opens is the plugin's, not the host's (held.py)

    @property
    def in_memory(self) -> bool:
        return self.path == MEMORY

    @property
    def is_open(self) -> bool:
        return self._con is not None

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the file, in the layout this code understands (blocking)."""
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
            migrated = migrate_seed_database(con, self.seed, self.path)
            if migrated is not None:
                self.seed_migration = migrated
            _, self.schema_version = migrate(con, self.path)
        except BaseException:
            con.close()  # or the file stays open, and locked, until the garbage collector runs
            raise
        return con

    def open(self, path: str | None = None) -> None:
        """Connect (to ``path`` from now on, when given: the in-memory fallback)."""
        if path is not None:
            self.path = path
        con = self.connect()
        with self._lock:
            self._con = con
            self.generation += 1

    def reopen(self) -> None:
        """A new connection, checked with a query, replaces the current one (whose cursors follow
        it). Raises what connecting raised, the current connection left as it was; except for a
        database DuckDB invalidated (a failed checkpoint): that one is closed and a new database
        instance is opened from the file (its write-ahead log replays), see :meth:`reopen_closed_first`."""
        try:
            con = self.connect()
        except duckdb.Error as exc:
            if not invalidated(exc):
                raise
            logger.warning("store: the database instance was invalidated; opening a new one from %s", self.path)
            self.reopen_closed_first()
            return
        try:
            con.execute("SELECT 1").fetchall()
        except BaseException:
            con.close()
            raise
        with self._lock:
            old, self._con = self._con, con
            self.generation += 1
        if old is not None:
            try:
                old.close()
            except Exception:
                pass

    def reopen_closed_first(self) -> None:
        """Close the connection (every cursor with it), then connect again: while any connection
        to the file is open, DuckDB hands a new one the same database instance, and this one must
        be a new instance (the file under the path changed)."""
        with self._lock:
            old, self._con = self._con, None
            self.generation += 1
            if old is not None:
                try:
                    old.close()
                except duckdb.Error:
                    pass
            self._con = self.connect()

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def break_connection(self) -> None:
        """Fault injection: close the live connection as a crashed database link would (it stays
        in place, closed, until a reconnect)."""
        with self._lock:
            if self._con is not None:
                self._con.close()

    # -- cursors -----------------------------------------------------------------------------------
    def cursor(self) -> Cursor:
        """The calling thread's cursor of the current connection."""
        local = self._local
        if getattr(local, "gen", None) != self.generation or local.cur is None:
            local.cur, local.gen = self._new_cursor()
        return local.cur  # type: ignore[no-any-return]

    def forget_cursor(self) -> None:
        """Close the calling thread's cursor (it failed, or the thread ends); the next
        :meth:`cursor` opens another."""
        cur, self._local.cur = getattr(self._local, "cur", None), None
        if cur is not None:
            try:
                cur.close()
            except duckdb.Error:
                pass

    @contextmanager
    def own_cursor(self) -> Iterator[Cursor]:
        """A cursor of the current connection for one piece of work, closed after it."""
        cur, _ = self._new_cursor()
        try:
            yield cur
        finally:
            cur.close()

    def _new_cursor(self) -> tuple[Cursor, int]:
        """A new cursor of the current connection, and its generation."""
        with self._lock:
            if self._con is None:
                raise duckdb.ConnectionException("store connection is closed")
            return self._con.cursor(), self.generation
