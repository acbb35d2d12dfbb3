"""DuckDB's exception classes, for the classifier (which must not import a database driver).

``database_error_kind`` tells what a class of DuckDB's means for a report; ``NAMED_CLASSES``
maps the class names a worker may report (``"ConnectionException"``) to the classes.
"""

from __future__ import annotations

import duckdb

DUCKDB_MODULE = duckdb.Error.__module__  # "_duckdb"

NAMED_CLASSES: dict[str, type[BaseException]] = {
    name: obj
    for name in dir(duckdb)
    if isinstance(obj := getattr(duckdb, name), type) and issubclass(obj, BaseException)
}


def database_error_kind(cls: type[BaseException]) -> str | None:
    """``connection``, ``integrity``, ``locked``, ``memory`` or ``other`` for a DuckDB exception
    class; None for any other class."""
    if not (cls.__module__ == DUCKDB_MODULE or issubclass(cls, duckdb.Error)):
        return None
    if issubclass(cls, duckdb.ConnectionException):
        return "connection"
    if issubclass(cls, duckdb.ConstraintException | duckdb.IntegrityError):
        return "integrity"
    if issubclass(cls, duckdb.TransactionException):
        return "locked"
    if issubclass(cls, duckdb.OutOfMemoryException):
        return "memory"
    return "other"
