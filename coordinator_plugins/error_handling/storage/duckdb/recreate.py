"""A database file deleted or replaced under a running store: noticed, said, and recreated.

DuckDB keeps writing to a file that was deleted (its descriptor stays open), so nothing fails and
everything would be gone at the next start. The writer thread checks every ``CHECK_INTERVAL``
seconds that the file at the store's path is still the one it opened (device and inode). When it
is not, the store is not healthy (an issue names the file) until it has rebuilt it: it copies
every table of the database it still has open into a new file, moves a file that replaced
its own aside (``<path>.replaced-<time>``, nothing of anyone's is deleted), puts the new file in
place and reconnects to it. Every acknowledged write is in the copy: groups and their counts,
occurrences, levels, strategy runs and everything learned.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from coordinator_plugins.error_handling.model import iso, utcnow
from coordinator_plugins.error_handling.storage.duckdb.database import Database
from coordinator_plugins.error_handling.storage.duckdb.migrations import migrate

logger = logging.getLogger(__name__)
CHECK_INTERVAL = 1.0  # seconds between two looks at the file (the writer thread's)
_FRESH = "eh_recreated"


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class FileWatch:
    """The watch over a store's :class:`Database` file; ``check`` runs on the store's writer thread."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.identity: tuple[int, int] | None = None
        self.next_check = 0.0
        self.problem: str | None = None  # the file is gone or foreign and not rebuilt yet
        self.history: list[str] = []  # what happened to the file (kept until restart)
        self.recreated = 0
        self.unseen = False  # the last look at the file failed (said once)

    @property
    def enabled(self) -> bool:
        return not self.database.in_memory and self.identity is not None

    @property
    def healthy(self) -> bool:
        return self.problem is None

    def opened(self) -> None:
        self.identity = None if self.database.in_memory else _identity(self.database.path)

    def issues(self) -> list[str]:
        return ([self.problem] if self.problem else []) + self.history[-3:]

    def check(self) -> bool:
        """Look at the file (at most every CHECK_INTERVAL); rebuild it when it is not ours.
        True when the connection changed."""
        now = time.monotonic()
        if not self.enabled or now < self.next_check:
            return False
        self.next_check = now + CHECK_INTERVAL
        try:
            found = _identity(self.database.path)
        except OSError as exc:  # the directory cannot be searched now (its permissions): look again later
            if not self.unseen:
                self.unseen = True
                logger.warning("store: cannot look at %s (said once until it can again): %s", self.database.path, exc)
            return False
        self.unseen = False
        if found == self.identity:
            return False
        what = "deleted" if found is None else "replaced by another file"
        if self.problem is None:
            self.problem = f"database file {self.database.path} was {what} while open (noticed {iso(utcnow())})"
            logger.error("store: %s; rebuilding it from the open database", self.problem)
        try:
            self._rebuild(replaced=found is not None)
        except Exception as exc:
            self.problem = (
                f"database file {self.database.path} was {what} and could not be rebuilt yet "
                f"({type(exc).__name__}: {exc}); writes go to the deleted file until it is"
            )
            logger.error("store: %s", self.problem)
            return False
        self.recreated += 1
        self.history.append(
            f"database file {self.database.path} was {what} while open; recreated at {iso(utcnow())} "
            "with everything the store held"
        )
        self.problem = None
        logger.warning("store: %s", self.history[-1])
        return True

    def _rebuild(self, replaced: bool) -> None:
        path = self.database.path
        tmp = path + ".recreating"
        for stale in (tmp, tmp + ".wal"):
            if os.path.exists(stale):
                os.remove(stale)
        with self.database.own_cursor() as cur:
            cur.execute("CHECKPOINT")  # the old write-ahead log, if any, into the open file
            self._copy(cur, tmp)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for suffix in ("", ".wal"):
            if os.path.exists(path + suffix):  # someone else's file (or a log of ours already merged)
                os.replace(path + suffix, f"{path}.replaced-{stamp}{suffix}")
        os.replace(tmp, path)
        # the old connection (the deleted file's database) must not serve the new file
        self.database.reopen_closed_first()
        self.identity = _identity(path)
        if replaced:
            logger.warning("store: the file that replaced %s was kept as %s.replaced-%s", path, path, stamp)

    def _copy(self, cur: Any, tmp: str) -> None:
        """Every table of the open database into a new file at ``tmp``, in one transaction."""
        (source,) = cur.execute("SELECT current_database()").fetchone()
        tables = [
            r[0]
            for r in cur.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_catalog = ? AND table_schema = 'main' "
                "AND table_type = 'BASE TABLE'",
                [source],
            ).fetchall()
        ]
        cur.execute(f"ATTACH {_sql_str(tmp)} AS {_FRESH}")
        try:
            cur.execute(f"USE {_FRESH}")
            if "recovery_performance" in tables:  # new runs must not reuse the ids of copied ones
                (start,) = cur.execute(
                    f"SELECT coalesce(max(id), 0) + 1 FROM {_q(source)}.main.recovery_performance"
                ).fetchone()
                cur.execute(f"CREATE SEQUENCE recovery_performance_seq START WITH {int(start)}")
            migrate(cur, tmp)
            have = {
                r[0]
                for r in cur.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_catalog = ? "
                    "AND table_schema = 'main'",
                    [_FRESH],
                ).fetchall()
            }
            cur.execute("BEGIN TRANSACTION")
            try:
                for t in tables:
                    if t == "schema_version":
                        continue  # the new file has its own (the same version)
                    src = f"{_q(source)}.main.{_q(t)}"
                    if t in have:
                        cur.execute(f"INSERT INTO {_FRESH}.main.{_q(t)} SELECT * FROM {src}")
                    else:
                        cur.execute(f"CREATE TABLE {_FRESH}.main.{_q(t)} AS SELECT * FROM {src}")
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute(f"CHECKPOINT {_FRESH}")
        finally:
            try:
                cur.execute(f"USE {_q(source)}")
            finally:
                cur.execute(f"DETACH DATABASE IF EXISTS {_FRESH}")


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
