"""Is the DuckDB file at ``database`` already open in this process, by the host? (issue 28.5)

DuckDB opens a file once per process: a second connection gets the same database instance, and
only with the same configuration ("Can't open a connection to same database file with a
different configuration than existing connections"). The plugin opens its file with its own
memory limit, writer thread and migrations, so pointing ``database`` at the coordinator's own
open file (the seed coordinator keeps ``coordinator.db`` open on its ``db_path``) used to fail
only when the app started, inside the thread that runs it, while the coordinator logged
"started". It is refused when the plugin is installed instead, with the fix.

"Open in this process" is read from ``/proc/self/fd`` (Linux); files the plugin's own stores
have open are not the host's (two integrations on one file share it, as before). Where
``/proc/self/fd`` does not exist, DuckDB's error at start is translated into the same message.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Protocol

MEMORY = ":memory:"
_FDS = "/proc/self/fd"


class _Open(Protocol):
    path: str

    @property
    def is_open(self) -> bool: ...


_ours: weakref.WeakSet[_Open] = weakref.WeakSet()  # the plugin's databases (open or not)
_lock = threading.Lock()


def ours(database: _Open) -> None:
    """Count ``database`` (a :class:`~.database.Database`) as the plugin's own."""
    with _lock:
        _ours.add(database)


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def same_file_problem(path: str) -> str:
    """The message for a ``database`` that the host process has open already: what and the fix."""
    return (
        f"error_handling.database: {path!r} is the coordinator's own database file (open in this "
        "process, or its db_path), and DuckDB opens a file once per process, with one configuration. Give the plugin "
        "a file of its own (database = \"error_handling.duckdb\"); to keep what the seed code stored in "
        "the coordinator's file, stop the coordinator, copy the file and name the copy "
        "(docs/migrating.md, step 4)"
    )


def held_by_host(path: str) -> bool:
    """True when a file descriptor of this process points at ``path`` and none of the plugin's
    open databases is on it. False where that cannot be known (no ``/proc/self/fd``)."""
    if path == MEMORY or not os.path.isdir(_FDS):
        return False
    real = _real(path)
    with _lock:
        if any(db.is_open and _real(db.path) == real for db in _ours):
            return False
    try:
        names = os.listdir(_FDS)
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(f"{_FDS}/{name}") == real:
                return True
        except OSError:  # closed meanwhile, or the listing's own descriptor
            continue
    return False


def refuse_if_held_by_host(path: str, host_path: str | None = None) -> None:
    """ValueError naming ``database`` and the fix when the host has the file open (see the module),
    or when ``host_path`` (the coordinator's own database file, which it may open only after the
    plugin was installed: the seed's ``db_path``) is the same file."""
    if path == MEMORY or "://" in path:
        return
    if held_by_host(path) or (host_path and _real(host_path) == _real(path)):
        raise ValueError(same_file_problem(path))


def is_same_file_error(reason: str) -> bool:
    """DuckDB's error for a second connection with another configuration, at open."""
    return "same database file with a different configuration" in reason


def cannot_write_fix(reason: str, path: str) -> str:
    """The fix for a database the process cannot write (``"; fix: ..."``), or "" for other reasons."""
    low = reason.lower()
    where = os.path.dirname(os.path.abspath(path))
    if "no space left" in low or "disk quota" in low:
        return (f"; fix: free space on the file system that holds {where} (nothing stored is lost), or set "
                "error_handling.database to a path on another one, then start again")
    if "permission denied" in low or "read-only file system" in low:
        user = os.getuid() if hasattr(os, "getuid") else "this user"
        return (f"; fix: make {where} and the database files in it writable by the user running the coordinator "
                f"(uid {user}), or set error_handling.database to a writable path, then start again")
    return ""
