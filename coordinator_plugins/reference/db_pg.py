"""The reference coordinator's own state in PostgreSQL, for a fleet (SPEC section 10): its tasks,
each owned by one member, and the members' heartbeats. When a member stops heartbeating for
``lease_ttl`` seconds, one survivor (the one whose transaction deletes the dead member's row)
takes its unfinished tasks: they are queued and run there, so no task is lost with a member.

Same interface as :class:`~coordinator_plugins.reference.db.CoordinatorDB` (rows buffered and
flushed by one writer; buffered across outages), plus :meth:`heartbeat` and :meth:`take_over`."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import asyncpg

from coordinator_plugins.reference.db import task_of

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS coordinator_tasks (
    task_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    spec JSONB,
    status TEXT,
    worker_id TEXT,
    attempt INTEGER,
    result JSONB,
    final BOOLEAN NOT NULL DEFAULT false,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS coordinator_tasks_owner ON coordinator_tasks (owner) WHERE NOT final;
CREATE TABLE IF NOT EXISTS coordinator_members (
    coordinator_id TEXT PRIMARY KEY,
    url TEXT,
    last_seen TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS coordinator_takeovers (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    survivor TEXT NOT NULL,
    dead TEXT NOT NULL,
    silent_for DOUBLE PRECISION,
    tasks INTEGER
);
"""
_LOCK = 0x636F6F72645F  # "coord_": schema creation by members starting together
_UPSERT = (
    "INSERT INTO coordinator_tasks (task_id, owner, spec, status, worker_id, attempt, result, final) "
    "SELECT t, $1, s::jsonb, st, w, a, r::jsonb, f FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], "
    "$6::int[], $7::text[], $8::bool[]) AS u(t, s, st, w, a, r, f) "
    "ON CONFLICT (task_id) DO UPDATE SET owner = excluded.owner, spec = excluded.spec, status = excluded.status, "
    "worker_id = excluded.worker_id, attempt = excluded.attempt, result = excluded.result, final = excluded.final, "
    "updated_at = now()"
)
_TAKE_OVER = (
    "WITH dead AS (DELETE FROM coordinator_members WHERE coordinator_id <> $1 AND last_seen < now() - "
    "make_interval(secs => $2) RETURNING coordinator_id, extract(epoch FROM now() - last_seen)::float8 AS silent), "
    "moved AS (UPDATE coordinator_tasks t SET owner = $1, updated_at = now() FROM dead d WHERE t.owner = "
    "d.coordinator_id AND NOT t.final RETURNING d.coordinator_id AS dead, t.task_id, t.spec, t.status, t.attempt) "
    "SELECT d.coordinator_id AS dead, d.silent, m.task_id, m.spec, m.status, m.attempt FROM dead d "
    "LEFT JOIN moved m ON m.dead = d.coordinator_id"
)


class PostgresCoordinatorDB:
    def __init__(self, url: str, coordinator_id: str) -> None:
        self.path = url
        self.coordinator_id = coordinator_id
        self.pool: asyncpg.Pool | None = None
        self._dirty: dict[str, tuple[Any, ...]] = {}
        self.ok = False
        self.last_error: str | None = None
        self.writes = 0
        self._flush_lock = asyncio.Lock()

    async def open(self) -> None:
        self.pool = await asyncpg.create_pool(self.path, min_size=1, max_size=3, timeout=10, command_timeout=30)
        async with self.pool.acquire() as con, con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
            await con.execute(_SCHEMA)
        self.ok = True

    async def close(self) -> None:
        try:
            await self.flush()
        except Exception as exc:
            logger.error("coordinator db: final flush failed, %d rows unwritten: %s", len(self._dirty), exc)
        pool, self.pool = self.pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(10):
                    await pool.close()
            except Exception:
                pool.terminate()

    def mark(self, task_id: str, spec: dict[str, Any], status: str, worker_id: str | None, attempt: int,
             result: dict[str, Any] | None, final: bool = False) -> None:
        self._dirty[task_id] = (task_id, json.dumps(spec), status, worker_id, attempt,
                                json.dumps(result) if result is not None else None, final)

    @property
    def pending_rows(self) -> int:
        return len(self._dirty)

    async def flush(self) -> int:
        """Write the buffered rows. Under a lock: when it returns, every row marked before the
        call is committed (a concurrent flush that took some of them has finished)."""
        async with self._flush_lock:
            return await self._flush()

    async def _flush(self) -> int:
        rows, self._dirty = self._dirty, {}
        if not rows:
            return 0
        try:
            if self.pool is None:
                raise ConnectionError("coordinator database is not connected")
            cols = [list(c) for c in zip(*rows.values(), strict=True)]
            await self.pool.execute(_UPSERT, self.coordinator_id, *cols)
        except Exception as exc:
            for k, v in rows.items():  # keep newer rows written meanwhile; restore the rest
                self._dirty.setdefault(k, v)
            self.ok = False
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise
        self.ok = True
        self.writes += len(rows)
        return len(rows)

    async def heartbeat(self, url: str) -> None:
        if self.pool is None:
            raise ConnectionError("coordinator database is not connected")
        await self.pool.execute(
            "INSERT INTO coordinator_members (coordinator_id, url) VALUES ($1, $2) ON CONFLICT (coordinator_id) "
            "DO UPDATE SET last_seen = now(), url = excluded.url", self.coordinator_id, url,
        )

    async def leave(self) -> None:
        if self.pool is not None:
            await self.pool.execute("DELETE FROM coordinator_members WHERE coordinator_id = $1", self.coordinator_id)

    async def take_over(self, ttl: float) -> list[dict[str, Any]]:
        """Claim the unfinished tasks of every member silent for ``ttl`` seconds. One entry per
        dead member: ``{dead, silent_for, tasks: [{task_id, spec, status, attempt}]}``."""
        if self.pool is None:
            raise ConnectionError("coordinator database is not connected")
        async with self.pool.acquire() as con, con.transaction():
            rows = await con.fetch(_TAKE_OVER, self.coordinator_id, float(ttl))
            out: dict[str, dict[str, Any]] = {}
            for r in rows:
                entry = out.setdefault(r["dead"], {"dead": r["dead"], "silent_for": r["silent"], "tasks": []})
                if r["task_id"] is not None:
                    entry["tasks"].append({"task_id": r["task_id"], "spec": json.loads(r["spec"]) if r["spec"] else {},
                                           "status": r["status"], "attempt": r["attempt"] or 0})
            for entry in out.values():
                await con.execute(
                    "INSERT INTO coordinator_takeovers (survivor, dead, silent_for, tasks) VALUES ($1, $2, $3, $4)",
                    self.coordinator_id, entry["dead"], entry["silent_for"], len(entry["tasks"]),
                )
        return list(out.values())

    async def members(self) -> list[dict[str, Any]]:
        if self.pool is None:
            return []
        rows = await self.pool.fetch(
            "SELECT coordinator_id, url, extract(epoch FROM now() - last_seen)::float8 AS age FROM coordinator_members "
            "ORDER BY coordinator_id"
        )
        return [dict(r) for r in rows]

    async def reconnect(self) -> bool:
        try:
            if self.pool is None:
                await self.open()
            else:
                await self.pool.expire_connections()
            await self.flush()
        except Exception as exc:
            self.ok = False
            self.last_error = f"{type(exc).__name__}: {exc}"
            logger.error("coordinator db: reconnect failed: %s", self.last_error)
            return False
        self.ok = True
        self.last_error = None
        return True

    async def ping(self) -> bool:
        if self.pool is None:
            return False
        try:
            async with asyncio.timeout(5):
                await self.pool.fetchval("SELECT 1")
            return True
        except Exception:
            return False

    async def load_tasks(self) -> list[dict[str, Any]]:
        if self.pool is None:
            raise ConnectionError("coordinator database is not connected")
        rows = await self.pool.fetch(
            "SELECT task_id, spec, status, worker_id, attempt, result FROM coordinator_tasks WHERE owner = $1",
            self.coordinator_id,
        )
        return [task_of(*r) for r in rows]

    async def task(self, task_id: str) -> dict[str, Any] | None:
        """A task as the fleet stored it (whichever member owns or owned it); None when unknown."""
        if self.pool is None:
            raise ConnectionError("coordinator database is not connected")
        r = await self.pool.fetchrow(
            "SELECT task_id, owner, spec, status, worker_id, attempt, result, final FROM coordinator_tasks "
            "WHERE task_id = $1", task_id,
        )
        if r is None:
            return None
        row = task_of(r["task_id"], r["spec"], r["status"], r["worker_id"], r["attempt"], r["result"])
        return {**row, "owner": r["owner"], "final": r["final"], "stored": True}

    def break_connection(self) -> None:
        """Fault injection: every pooled connection is dropped, as a crashed database link would."""
        if self.pool is not None:
            self.pool.terminate()
            self.pool = None
