"""The ``idempotency_keys`` table of the DuckDB store (schema version 4): its layout, the upsert
that writes a key in the same commit as its report's occurrence, and the read of one key."""

from __future__ import annotations

from json import dumps, loads
from typing import Any

import duckdb

from coordinator_plugins.error_handling.storage.records import IdempotencyRecord

TABLE = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key VARCHAR PRIMARY KEY,
    body_hash VARCHAR NOT NULL,
    answer JSON,
    member VARCHAR,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
)"""

_COLUMNS = ("key", "body_hash", "answer", "member", "created_at", "expires_at")
_TYPES = ("VARCHAR", "VARCHAR", "JSON", "VARCHAR", "TIMESTAMPTZ", "TIMESTAMPTZ")
UPSERT = (
    "INSERT INTO idempotency_keys (" + ", ".join(_COLUMNS) + ") SELECT * FROM (SELECT "
    + ", ".join(f"unnest(?::{t}[]) AS {c}" for c, t in zip(_COLUMNS, _TYPES, strict=True))
    + ") ON CONFLICT (key) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "key")
)
EXPIRE = "DELETE FROM idempotency_keys WHERE expires_at < now()"


def key_row(r: IdempotencyRecord) -> tuple[Any, ...]:
    return (r.key, r.body_hash, dumps(dict(r.answer)) if r.answer is not None else None, r.member,
            r.created_at, r.expires_at)


def keys_of(cur: duckdb.DuckDBPyConnection, keys: list[str]) -> dict[str, IdempotencyRecord]:
    """The records of those of ``keys`` stored and not expired; {} for a file without the table."""
    try:
        rows = cur.execute(
            "SELECT key, body_hash, answer, member, created_at, expires_at FROM idempotency_keys "
            "WHERE key IN (SELECT unnest(?::VARCHAR[])) AND expires_at > now()", [keys]).fetchall()
    except duckdb.CatalogException:
        return {}
    return {row[0]: IdempotencyRecord(row[0], row[1], loads(row[2]) if isinstance(row[2], str) else row[2],
                                      row[4], row[5], row[3]) for row in rows}
