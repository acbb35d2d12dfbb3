"""The PostgreSQL store (SPEC section 10): the same promises as the DuckDB store, on asyncpg.

It is built from parts that share one :class:`~.pool.Pool` of connections: a
:class:`~.batch.PostgresQueue` gathers the writes queued on the loop, a
:class:`~.writer.PostgresWriter` task commits them in batches (group commit: while one transaction
commits, the next batch gathers) and releases a write's waiter only after the commit that holds it,
so a 202 means the occurrence is in the database; :class:`~.reads.PostgresReads` answers the reads
and :class:`~.fleet.PostgresFleet` what a fleet of coordinators shares. Counts are increments
computed by the database (``aggregated_count = aggregated_count + n``), so members of a fleet
writing the same group never lose each other's occurrences. When the database is unreachable,
writes stay buffered (newer ones folded into the retried batch) and the pool reconnects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from coordinator_plugins.error_handling.storage.base import SchemaTooNew, StoreClosed, StoreUnavailable
from coordinator_plugins.error_handling.storage.health import Health
from coordinator_plugins.error_handling.storage.postgres import idempotency
from coordinator_plugins.error_handling.storage.postgres.batch import PostgresQueue
from coordinator_plugins.error_handling.storage.postgres.fleet import PostgresFleet
from coordinator_plugins.error_handling.storage.postgres.pool import TRANSIENT, Pool
from coordinator_plugins.error_handling.storage.postgres.reads import PostgresReads
from coordinator_plugins.error_handling.storage.postgres.rows import learner_row, level_row, score_row, timeout_row
from coordinator_plugins.error_handling.storage.postgres.schema import migrate
from coordinator_plugins.error_handling.storage.postgres.writer import PostgresWriter
from coordinator_plugins.error_handling.storage.reading import ForwardedReads
from coordinator_plugins.error_handling.storage.records import (
    GroupRecord,
    IdempotencyRecord,
    LearnerRecord,
    LevelRecord,
    OccurrenceRecord,
    StoreStatus,
    StrategyRun,
    StrategyScore,
    TimeoutRecord,
)

logger = logging.getLogger(__name__)


class PostgresStore(ForwardedReads):
    """Start with :meth:`open` and stop with :meth:`close`, both on the loop."""

    reads: PostgresReads

    def __init__(
        self,
        url: str,
        coordinator_id: str = "",
        queue_limit: int = 200_000,
        on_error: Callable[[BaseException], None] | None = None,
        pool_size: int = 8,
        gather: float = 0.0005,
    ) -> None:
        self.coordinator_id = coordinator_id
        self.pool = Pool(url, pool_size)
        self.health = Health()
        self.queue = PostgresQueue(queue_limit)
        self.writer = PostgresWriter(self.pool, self.queue, self.health, self.reconnect, coordinator_id,
                                     on_error=on_error, gather=gather)
        self.reads = PostgresReads(self.pool)
        self.fleet = PostgresFleet(self.pool, coordinator_id)
        self.schema_version = 0

    @property
    def path(self) -> str:
        """The database URL without its password."""
        return self.pool.path

    @property
    def closed(self) -> bool:
        return self.queue.closed

    # -- lifecycle ---------------------------------------------------------------------------------
    async def open(self) -> None:
        try:
            await self.pool.open()
            async with self.pool.get().acquire() as con:
                self.schema_version = await migrate(con, self.path)
        except SchemaTooNew:
            await self.pool.close()
            raise
        except (*TRANSIENT, asyncpg.PostgresError, ValueError) as exc:
            await self.pool.close()
            raise StoreUnavailable(
                f"error_handling.database: cannot open {self.path}: {type(exc).__name__}: {exc}"
            ) from None
        self.queue.closed = False
        self.writer.start()

    async def close(self) -> None:
        if self.queue.closed or not self.pool.opened:
            self.queue.closed = True
            return
        try:
            await self.flush(timeout=30)
        except TimeoutError:
            logger.error("store: pending writes could not be committed within 30 s (%s)", self.health.last_error)
        except StoreClosed:
            pass
        await self.writer.stop()
        self.queue.closed = True
        self.writer.close()
        await self.pool.close()

    # -- writes --------------------------------------------------------------------------------------
    def record_occurrence(
        self, occurrence: OccurrenceRecord, group: GroupRecord | None = None, key: IdempotencyRecord | None = None
    ) -> int:
        seq = self.queue.occurrence(occurrence, group)
        if key is not None:  # the same batch (queued on the loop, nothing between): one transaction
            seq = self.queue.upsert("idempotency", key.key, idempotency.key_row(key))
        return seq

    async def idempotency_keys(self, keys: list[str]) -> dict[str, IdempotencyRecord]:
        return await idempotency.keys_of(self.pool.get(), keys)

    async def claim_idempotency_key(self, claim: IdempotencyRecord, lease: float) -> IdempotencyRecord | None:
        """Claim ``claim.key`` for this member before its report is counted (see idempotency.py)."""
        return await idempotency.claim(self.pool.get(), IdempotencyRecord(
            claim.key, claim.body_hash, None, claim.created_at, claim.expires_at, self.coordinator_id or "member"),
            lease)

    def save_group(self, group: GroupRecord) -> int:
        return self.queue.group(group)

    def record_strategy_run(self, run: StrategyRun) -> int:
        return self.queue.run(run)

    def save_recovery_level(self, level: LevelRecord) -> int:
        return self.queue.upsert("level", level.error_id, level_row(level))

    def save_strategy_score(self, score: StrategyScore) -> int:
        return self.queue.upsert("score", (score.key, score.strategy_id), score_row(score))

    def save_timeout(self, timeout: TimeoutRecord) -> int:
        return self.queue.upsert("timeout", (timeout.error_type, timeout.strategy_id), timeout_row(timeout))

    def save_learner_state(self, state: LearnerRecord) -> int:
        return self.queue.upsert("learner", state.key, learner_row(state))

    def apply_retention(self, days: float) -> int:
        return self.queue.retention(days)

    async def wait_durable(self, seq: int, timeout: float | None = None) -> None:
        await self.writer.wait_durable(seq, timeout)

    async def flush(self, timeout: float | None = None, seq: int | None = None) -> None:
        q = self.queue
        await self.writer.wait_durable(q.seq if seq is None else min(seq, q.seq), timeout)

    def committed_seq(self) -> int:
        return self.writer.committed  # group rows are written with their occurrences, never later

    # -- health ---------------------------------------------------------------------------------------
    def status(self) -> StoreStatus:
        q = self.queue
        return StoreStatus(
            ok=self.health.failing_since is None and self.pool.opened and not q.closed,
            path=self.path,
            **self.health.fields(q.seq - self.writer.committed, q.occurrences_queued, q.dropped_occurrences,
                                 self.schema_version, self.reads.skipped_rows),
        )

    async def ping(self) -> bool:
        return await self.pool.ping()

    def break_connection(self) -> None:
        """Fault injection: every connection dies at once, as a crashed database link would; the
        store stays unreachable until :meth:`reconnect` (or the writer's own, after a while)."""
        self.pool.terminate()

    async def reconnect(self) -> bool:
        """A new pool of connections (or the same, its connections renewed); True once one works."""
        if self.queue.closed:
            return False
        try:
            if not self.pool.usable:
                await self.pool.renew()
            else:
                await self.pool.expire()
        except (*TRANSIENT, asyncpg.PostgresError) as exc:
            self.health.last_error = f"{type(exc).__name__}: {exc}"
            logger.error("store: reconnect to %s failed: %s", self.path, self.health.last_error)
            return False
        ok = await self.ping()
        if ok:
            self.health.reconnects += 1
            self.queue.wake.set()
            logger.info("store: reconnected to %s", self.path)
        return ok

    # -- reads ----------------------------------------------------------------------------------------
    # -- what the fleet shares (fleet.FleetLedger; see fleet.py) -------------------------------------------
    async def member_heartbeat(self, info: dict[str, Any]) -> None:
        await self.fleet.member_heartbeat(info)

    async def member_leave(self) -> None:
        await self.fleet.member_leave()

    async def members(self, ttl: float) -> list[dict[str, Any]]:
        return await self.fleet.members(ttl)

    async def claim_group(self, fingerprint: str, error_id: str, regression_window: float) -> str:
        return await self.fleet.claim_group(fingerprint, error_id, regression_window)

    async def acquire_lease(self, error_id: str, ttl: float) -> tuple[bool, str, float]:
        return await self.fleet.acquire_lease(error_id, ttl)

    async def renew_leases(self, error_ids: list[str], ttl: float) -> list[str]:
        return await self.fleet.renew_leases(error_ids, ttl)

    async def release_lease(self, error_id: str) -> None:
        await self.fleet.release_lease(error_id)

    async def leases(self) -> list[dict[str, Any]]:
        return await self.fleet.leases()

    async def orphaned_leases(self) -> list[dict[str, Any]]:
        return await self.fleet.orphaned_leases()

    async def publish_event(self, kind: str, error_id: str | None, payload: dict[str, Any] | None = None) -> int:
        return await self.fleet.publish_event(kind, error_id, payload)

    async def events_since(self, last_id: int, limit: int = 1000) -> list[dict[str, Any]]:
        return await self.fleet.events_since(last_id, limit)

    async def last_event_id(self) -> int:
        return await self.fleet.last_event_id()

    async def runs_since(self, last_id: int, limit: int = 1000) -> list[tuple[int, StrategyRun]]:
        return await self.fleet.runs_since(last_id, limit)

    async def last_run_id(self) -> int:
        return await self.fleet.last_run_id()

    async def budget_acquire(
        self, component: str, window: float, limit: int, global_limit: int
    ) -> tuple[int | None, float]:
        return await self.fleet.budget_acquire(component, window, limit, global_limit)

    async def budget_refund(self, action_id: int) -> None:
        await self.fleet.budget_refund(action_id)

    async def prune_fleet(self, window: float, ttl: float) -> None:
        await self.fleet.prune_fleet(window, ttl)
