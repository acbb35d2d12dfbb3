"""What a fleet of coordinators shares through PostgreSQL (SPEC section 10), offered by the
PostgreSQL store. Each call is one short transaction of its own, answered at once (these are
decisions, not queued writes): members' heartbeats, recovery leases, the current group of each
fingerprint, the event log of resolutions and resets, budget grants, and the strategy runs that
other members recorded. Only transactions, row locks and advisory locks are used."""

from __future__ import annotations

from typing import Any

import asyncpg

from coordinator_plugins.error_handling.storage.postgres.pool import Pool
from coordinator_plugins.error_handling.storage.postgres.reads import run_of
from coordinator_plugins.error_handling.storage.postgres.rows import clean_text, from_json, to_json
from coordinator_plugins.error_handling.storage.postgres.schema import BUDGET_LOCK
from coordinator_plugins.error_handling.storage.records import StrategyRun


class PostgresFleet:
    """The fleet calls of the member ``coordinator_id``, on the store's pool."""

    def __init__(self, pool: Pool, coordinator_id: str) -> None:
        self.pool = pool
        self.coordinator_id = coordinator_id

    def _fleet_pool(self) -> asyncpg.Pool:
        return self.pool.get()  # StoreClosed when the store is not open

    # -- members ---------------------------------------------------------------------------------------
    async def member_heartbeat(self, info: dict[str, Any]) -> None:
        await self._fleet_pool().execute(
            "INSERT INTO fleet_members (coordinator_id, info) VALUES ($1, $2::jsonb) ON CONFLICT (coordinator_id) "
            "DO UPDATE SET last_seen = now(), info = excluded.info",
            self.coordinator_id, to_json(info),
        )

    async def member_leave(self) -> None:
        await self._fleet_pool().execute("DELETE FROM fleet_members WHERE coordinator_id = $1", self.coordinator_id)

    async def members(self, ttl: float) -> list[dict[str, Any]]:
        """Every member, live (heartbeat within ``ttl`` s) or not, with its age."""
        rows = await self._fleet_pool().fetch(
            "SELECT coordinator_id, started_at, last_seen, info, extract(epoch FROM now() - last_seen)::float8 AS age "
            "FROM fleet_members ORDER BY coordinator_id"
        )
        return [
            {"coordinator_id": r["coordinator_id"], "started_at": r["started_at"], "last_seen": r["last_seen"],
             "age": r["age"], "live": r["age"] <= ttl, **(from_json(r["info"], {}) or {})}
            for r in rows
        ]

    # -- one group per fingerprint -----------------------------------------------------------------------
    async def claim_group(self, fingerprint: str, error_id: str, regression_window: float) -> str:
        """The fleet's current group of ``fingerprint``: ``error_id`` when none exists (or the
        current one was resolved more than ``regression_window`` seconds ago), else the existing one.
        Atomic: two members claiming at once get the same answer."""
        return str(await self._fleet_pool().fetchval(
            "INSERT INTO group_fingerprints (fingerprint, error_id) VALUES ($1, $2) ON CONFLICT (fingerprint) "
            "DO UPDATE SET error_id = CASE WHEN EXISTS (SELECT 1 FROM error_reports r WHERE r.error_id = "
            "group_fingerprints.error_id AND r.resolution_status = 'resolved' AND r.resolution_time < now() - "
            "make_interval(secs => $3)) THEN excluded.error_id ELSE group_fingerprints.error_id END "
            "RETURNING error_id",
            fingerprint, error_id, float(regression_window),
        ))

    # -- leases ---------------------------------------------------------------------------------------------
    async def acquire_lease(self, error_id: str, ttl: float) -> tuple[bool, str, float]:
        """Take (or renew) the lease of a group's recovery: (granted, owner now, seconds it has left).
        Granted when no lease exists, this member holds it, or it expired."""
        row = await self._fleet_pool().fetchrow(
            "INSERT INTO recovery_leases (error_id, owner, expires_at) VALUES ($1, $2, now() + make_interval("
            "secs => $3)) ON CONFLICT (error_id) DO UPDATE SET owner = excluded.owner, expires_at = "
            "excluded.expires_at, acquired_at = CASE WHEN recovery_leases.owner = excluded.owner THEN "
            "recovery_leases.acquired_at ELSE now() END, renewals = CASE WHEN recovery_leases.owner = "
            "excluded.owner THEN recovery_leases.renewals + 1 ELSE 0 END, previous_owner = CASE WHEN "
            "recovery_leases.owner = excluded.owner THEN recovery_leases.previous_owner ELSE recovery_leases.owner "
            "END WHERE recovery_leases.owner = excluded.owner OR recovery_leases.expires_at < now() "
            "RETURNING owner",
            error_id, self.coordinator_id, float(ttl),
        )
        if row is not None:
            return True, self.coordinator_id, float(ttl)
        held = await self._fleet_pool().fetchrow(
            "SELECT owner, extract(epoch FROM expires_at - now())::float8 AS left FROM recovery_leases "
            "WHERE error_id = $1", error_id,
        )
        if held is None:  # released meanwhile
            return await self.acquire_lease(error_id, ttl)
        return False, str(held["owner"]), max(0.0, float(held["left"]))

    async def renew_leases(self, error_ids: list[str], ttl: float) -> list[str]:
        """Extend this member's leases; the ids it still holds."""
        rows = await self._fleet_pool().fetch(
            "UPDATE recovery_leases SET expires_at = now() + make_interval(secs => $3), renewals = renewals + 1 "
            "WHERE owner = $1 AND error_id = ANY($2::text[]) RETURNING error_id",
            self.coordinator_id, error_ids, float(ttl),
        )
        return [r["error_id"] for r in rows]

    async def release_lease(self, error_id: str) -> None:
        await self._fleet_pool().execute(
            "DELETE FROM recovery_leases WHERE error_id = $1 AND owner = $2", error_id, self.coordinator_id
        )

    async def leases(self) -> list[dict[str, Any]]:
        rows = await self._fleet_pool().fetch(
            "SELECT error_id, owner, acquired_at, renewals, previous_owner, "
            "extract(epoch FROM expires_at - now())::float8 AS left FROM recovery_leases ORDER BY error_id"
        )
        return [dict(r) for r in rows]

    async def orphaned_leases(self) -> list[dict[str, Any]]:
        """Expired leases of other members on groups still open: recoveries a member left unfinished."""
        rows = await self._fleet_pool().fetch(
            "SELECT l.error_id, l.owner, extract(epoch FROM now() - l.expires_at)::float8 AS expired_for "
            "FROM recovery_leases l JOIN error_reports r USING (error_id) WHERE l.expires_at < now() "
            "AND l.owner <> $1 AND r.resolution_status <> 'resolved'",
            self.coordinator_id,
        )
        return [dict(r) for r in rows]

    # -- events: resolutions and resets, seen by every member ---------------------------------------------
    async def publish_event(self, kind: str, error_id: str | None, payload: dict[str, Any] | None = None) -> int:
        return int(await self._fleet_pool().fetchval(
            "INSERT INTO fleet_events (coordinator_id, kind, error_id, payload) VALUES ($1, $2, $3, $4::jsonb) "
            "RETURNING id",
            self.coordinator_id, kind, error_id, to_json(payload or {}),
        ))

    async def events_since(self, last_id: int, limit: int = 1000) -> list[dict[str, Any]]:
        """Events of other members after ``last_id``, oldest first. An id is taken when the
        insert runs and becomes visible at its commit, so ids may appear out of order: the caller
        reads again from a little before its last id (see ``fleet.sync``) and skips what it saw."""
        rows = await self._fleet_pool().fetch(
            "SELECT id, coordinator_id, kind, error_id, payload FROM fleet_events WHERE id > $1 "
            "AND coordinator_id IS DISTINCT FROM $2 ORDER BY id LIMIT $3",
            last_id, self.coordinator_id, limit,
        )
        return [{**dict(r), "payload": from_json(r["payload"], {}) or {}} for r in rows]

    async def last_event_id(self) -> int:
        return int(await self._fleet_pool().fetchval("SELECT coalesce(max(id), 0) FROM fleet_events"))

    # -- strategy runs of the other members ------------------------------------------------------------------
    async def runs_since(self, last_id: int, limit: int = 1000) -> list[tuple[int, StrategyRun]]:
        """Runs other members recorded after ``last_id`` (same caveat on id order as events)."""
        rows = await self._fleet_pool().fetch(
            "SELECT * FROM recovery_performance WHERE id > $1 AND coordinator_id IS DISTINCT FROM $2 "
            "ORDER BY id LIMIT $3",
            last_id, self.coordinator_id, limit,
        )
        return [(int(r["id"]), run_of(r)) for r in rows]

    async def last_run_id(self) -> int:
        return int(await self._fleet_pool().fetchval("SELECT coalesce(max(id), 0) FROM recovery_performance"))

    # -- one budget --------------------------------------------------------------------------------------------
    async def budget_acquire(
        self, component: str, window: float, limit: int, global_limit: int
    ) -> tuple[int | None, float]:
        """Spend one level-3+ action of ``component`` fleet-wide: (action id, 0) when granted,
        (None, seconds until one may be) when the window is full. Decided under one advisory
        lock, so two members cannot both take the last action."""
        component = clean_text(component) or ""  # PostgreSQL's UTF8 refuses NUL: never a failed query
        async with self._fleet_pool().acquire() as con, con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock($1)", BUDGET_LOCK)
            r = await con.fetchrow(
                "SELECT count(*) FILTER (WHERE component = $1) AS mine, count(*) AS total, "
                "extract(epoch FROM min(at) FILTER (WHERE component = $1) + make_interval(secs => $2) - now())"
                "::float8 AS mine_wait, extract(epoch FROM min(at) + make_interval(secs => $2) - now())::float8 "
                "AS total_wait FROM budget_actions WHERE at > now() - make_interval(secs => $2)",
                component, float(window),
            )
            waits = []
            if limit and r["mine"] >= limit:
                waits.append(r["mine_wait"] or 0.0)
            if global_limit and r["total"] >= global_limit:
                waits.append(r["total_wait"] or 0.0)
            if waits:
                return None, max(0.0, max(waits))
            action = await con.fetchval(
                "INSERT INTO budget_actions (component, coordinator_id) VALUES ($1, $2) RETURNING id",
                component, self.coordinator_id,
            )
            return int(action), 0.0

    async def budget_refund(self, action_id: int) -> None:
        await self._fleet_pool().execute("DELETE FROM budget_actions WHERE id = $1", action_id)

    async def prune_fleet(self, window: float, ttl: float) -> None:
        """Forget budget actions past every window and members gone for long (idempotent: any
        member may run it, and two running it at once do not fight)."""
        pool = self._fleet_pool()
        await pool.execute("DELETE FROM budget_actions WHERE at < now() - make_interval(secs => $1)",
                           float(window) * 2 + 60)
        await pool.execute("DELETE FROM fleet_members WHERE last_seen < now() - make_interval(secs => $1)",
                           max(3600.0, ttl * 10))
        await pool.execute("DELETE FROM fleet_events WHERE at < now() - interval '1 day'")
        await pool.execute("DELETE FROM store_commits WHERE at < now() - interval '1 day'")
