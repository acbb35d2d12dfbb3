"""The ``idempotency_keys`` table of the PostgreSQL store (schema version 6): its layout, the
upsert that writes a key in the same transaction as its report's occurrence, the read of one key,
and the claim that makes a key one member's in a fleet.

A member claims a key (a row without an answer) before it counts the report; the answer is
written with the occurrence, in one transaction. So a key with an answer names a stored report,
and a key claimed without one names a report not stored yet: another member that gets the same
key answers 409 meanwhile. A claim older than ``lease`` seconds whose answer never came (its
member died before the commit) is taken over by the next member that gets the key, and a
member takes its own claim back at once (it has no write of that key queued any more)."""

from __future__ import annotations

from typing import Any

import asyncpg

from coordinator_plugins.error_handling.storage.postgres.rows import as_utc, clean_text, from_json, to_json
from coordinator_plugins.error_handling.storage.records import IdempotencyRecord

TABLE = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    body_hash TEXT NOT NULL,
    answer JSONB,
    member TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_keys_expires ON idempotency_keys (expires_at);
"""
_COLUMNS = ("key", "body_hash", "answer", "member", "created_at", "expires_at")
_TYPES = ("text", "text", "jsonb", "text", "timestamptz", "timestamptz")
UPSERT = (
    "INSERT INTO idempotency_keys (" + ", ".join(_COLUMNS) + ") SELECT * FROM unnest("
    + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_TYPES))
    + ") ON CONFLICT (key) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "key")
)
EXPIRE = "DELETE FROM idempotency_keys WHERE expires_at < now()"
_SELECT = "SELECT key, body_hash, answer, member, created_at, expires_at FROM idempotency_keys WHERE key = $1"


def key_row(r: IdempotencyRecord) -> tuple[Any, ...]:
    return (clean_text(r.key), r.body_hash, to_json(dict(r.answer)) if r.answer is not None else None,
            clean_text(r.member), as_utc(r.created_at), as_utc(r.expires_at))


def _record(row: Any) -> IdempotencyRecord:
    return IdempotencyRecord(row["key"], row["body_hash"], from_json(row["answer"]), row["created_at"],
                             row["expires_at"], row["member"])


async def keys_of(pool: asyncpg.Pool, keys: list[str]) -> dict[str, IdempotencyRecord]:
    cleaned = {clean_text(k) or "": k for k in keys}  # the caller's spelling back
    rows = await pool.fetch(
        "SELECT key, body_hash, answer, member, created_at, expires_at FROM idempotency_keys "
        "WHERE key = ANY($1::text[]) AND expires_at > now()", list(cleaned))
    return {cleaned.get(r["key"], r["key"]): _record(r) for r in rows}


async def claim(pool: asyncpg.Pool, c: IdempotencyRecord, lease: float) -> IdempotencyRecord | None:
    """None when ``c.member`` now holds the key (new, expired, or a claim without its answer
    that is its own (the caller knows it has no write of it queued: web/idempotency.py) or older
    than ``lease`` seconds); else the record that holds it."""
    key = clean_text(c.key)
    async with pool.acquire() as con, con.transaction():
        got = await con.fetchval(
            "INSERT INTO idempotency_keys (key, body_hash, answer, member, created_at, expires_at) "
            "VALUES ($1, $2, NULL, $3, now(), $4) ON CONFLICT (key) DO UPDATE SET body_hash = excluded.body_hash, "
            "answer = NULL, member = excluded.member, created_at = now(), expires_at = excluded.expires_at "
            "WHERE idempotency_keys.expires_at < now() OR (idempotency_keys.answer IS NULL "
            "AND (idempotency_keys.member = excluded.member "
            "OR idempotency_keys.created_at < now() - make_interval(secs => $5))) RETURNING key",
            key, c.body_hash, clean_text(c.member), as_utc(c.expires_at), float(lease))
        if got is not None:
            return None
        row = await con.fetchrow(_SELECT, key)
    return _record(row) if row is not None else None
