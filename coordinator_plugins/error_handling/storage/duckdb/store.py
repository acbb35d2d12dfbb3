"""The embedded store: DuckDB behind the ``Store`` protocol (``storage/base.py``).

DuckDB never runs on the event loop. The store is built from parts that share one
:class:`~.database.Database` (the file, its connection, and every thread's cursor of it):

- a :class:`~.queue.WriteQueue` gathers the writes queued on the loop;
- a :class:`~.writer.Writer` thread commits each batch in one transaction (group commit) and
  reports how far it got to a :class:`~.waits.Durability`, which resolves ``wait_durable(seq)``
  and ``flush``;
- :class:`~.reads.DuckDBReads` run every read on a reader thread;
- a :class:`~.recreate.FileWatch`, looked at by the writer, recreates a file deleted or replaced
  under the store with everything the store holds;
- a :class:`~.order.GroupOrder` keeps every group's paging key, noted by the writer, read by pages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import duckdb

from coordinator_plugins.error_handling.storage.base import StoreClosed, StoreUnavailable
from coordinator_plugins.error_handling.storage.duckdb.database import MEMORY, Cursor, Database
from coordinator_plugins.error_handling.storage.duckdb.held import (
    cannot_write_fix,
    is_same_file_error,
    refuse_if_held_by_host,
    same_file_problem,
)
from coordinator_plugins.error_handling.storage.duckdb.idempotency import key_row, keys_of
from coordinator_plugins.error_handling.storage.duckdb.order import GroupOrder
from coordinator_plugins.error_handling.storage.duckdb.queue import WriteQueue
from coordinator_plugins.error_handling.storage.duckdb.reads import DuckDBReads
from coordinator_plugins.error_handling.storage.duckdb.recreate import FileWatch
from coordinator_plugins.error_handling.storage.duckdb.schema import (
    learner_row,
    level_row,
    perf_row,
    score_row,
    timeout_row,
)
from coordinator_plugins.error_handling.storage.duckdb.waits import Durability
from coordinator_plugins.error_handling.storage.duckdb.writer import Writer
from coordinator_plugins.error_handling.storage.health import Health
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
from coordinator_plugins.error_handling.storage.seedhook import SeedHook

logger = logging.getLogger(__name__)
R = TypeVar("R")
CLOSE_FLUSH_TIMEOUT = 5.0  # s close() waits for the queued writes
RECONNECT_LOG_EVERY = 60.0  # s between two log lines of the same failing reconnect
__all__ = ["DuckDBStore"]


class DuckDBStore(ForwardedReads):
    """The embedded store. Start with :meth:`open` (on the loop) and stop with :meth:`close`.
    ``seed``: what the rows of a file the seed framework wrote become (``open_store`` passes
    ``error_handling.seed.convert_seed``); without it such a file is refused."""

    reads: DuckDBReads

    def __init__(
        self,
        path: str,
        queue_limit: int = 200_000,
        on_error: Callable[[BaseException], None] | None = None,
        auto_reconnect_after: float = 10.0,
        group_interval: float = 0.2,
        gather: float = 0.0,
        memory_mb: int = 64,
        fallback_to_memory: bool = False,
        seed: SeedHook | None = None,
        host_path: str | None = None,
    ) -> None:
        # the coordinator's own file (open in this process, or its ``host_path``): refused now, with the fix
        refuse_if_held_by_host(path, host_path)
        self.fallback_to_memory = fallback_to_memory
        self.fallback_reason: str | None = None
        self.database = Database(path, memory_mb, seed)
        self.health = Health()
        self.queue = WriteQueue(queue_limit)
        self.durability = Durability(self.queue, lambda: self.health.last_error, self.health.failing_for)
        self.order = GroupOrder()  # every group's (last_seen, error_id), for paging (see order.py)
        self.watch = FileWatch(self.database)
        self.writer = Writer(
            self.database, self.queue, self.durability, self.health, self.order, self.watch, self._reconnect,
            on_error=on_error, gather=gather, group_interval=group_interval,
            auto_reconnect_after=auto_reconnect_after,
        )
        self.reads = DuckDBReads(self.database, self.order)
        self._reconnect_said: tuple[str, float] = ("", 0.0)  # the failure last logged, and when

    @property
    def path(self) -> str:
        return self.database.path

    @property
    def seed_migration(self) -> dict[str, Any] | None:
        """What converting a seed-written file did when this store opened it (else None)."""
        return self.database.seed_migration

    @property
    def auto_reconnect_after(self) -> float:
        """Seconds of failing writes after which the writer reconnects by itself."""
        return self.writer.auto_reconnect_after

    @auto_reconnect_after.setter
    def auto_reconnect_after(self, seconds: float) -> None:
        self.writer.auto_reconnect_after = seconds

    # -- lifecycle -------------------------------------------------------------------------
    async def open(self, fallback_to_memory: bool | None = None) -> None:
        if fallback_to_memory is None:
            fallback_to_memory = self.fallback_to_memory
        self.queue.attach(asyncio.get_running_loop())
        try:
            await asyncio.to_thread(self.database.open)
        except StoreUnavailable:
            raise  # a schema newer than the code, or a seed file without a conversion
        except duckdb.Error as exc:
            reason = str(exc).splitlines()[0]
            if "lock" in reason.lower():
                reason = f"it is locked by another process ({reason})"
            if is_same_file_error(reason):  # opened by the host after the plugin was installed
                raise StoreUnavailable(same_file_problem(self.path)) from None
            if not fallback_to_memory:
                raise StoreUnavailable(
                    f"error_handling.database: cannot open {self.path!r}: {reason}{cannot_write_fix(reason, self.path)}"
                ) from None
            logger.error(
                "error handling: cannot open %s (%s); falling back to an in-memory database: "
                "nothing will survive a restart",
                self.path,
                reason,
            )
            self.fallback_reason = reason
            await asyncio.to_thread(self.database.open, MEMORY)
        self.watch.opened()
        try:
            self.writer.start()
        except BaseException:
            self.database.close()
            raise
        self.durability.accepting = True

    async def close(self) -> None:
        """Flush what is queued, stop the threads, close the database. Idempotent."""
        if not self.writer.running:
            self.database.close()
            return
        try:
            # bounded, so that a shutdown takes seconds: what was acknowledged is committed already
            # (a 202 waits for its commit); what is left are the lazy updates of known groups
            await self.flush(CLOSE_FLUSH_TIMEOUT)
        except (TimeoutError, StoreClosed):
            logger.error("store: pending writes could not be flushed within %g s (%s)", CLOSE_FLUSH_TIMEOUT,
                         self.health.last_error)
        await asyncio.to_thread(self.writer.stop, 3)
        self.reads.shutdown()
        self.database.close()
        self.durability.close()

    # -- writes (called on the loop; never block) -----------------------------------------
    def record_occurrence(
        self, occurrence: OccurrenceRecord, group: GroupRecord | None = None, key: IdempotencyRecord | None = None
    ) -> int:
        return self.queue.occurrence(occurrence, group, key_row(key) if key is not None else None)

    def save_group(self, group: GroupRecord) -> int:
        return self.queue.group(group)

    def record_strategy_run(self, run: StrategyRun) -> int:
        return self.queue.put("perf", None, perf_row(run))

    def save_recovery_level(self, level: LevelRecord) -> int:
        return self.queue.put("level", level.error_id, level_row(level))

    def save_strategy_score(self, score: StrategyScore) -> int:
        return self.queue.put("score", (score.key, score.strategy_id), score_row(score))

    def save_timeout(self, timeout: TimeoutRecord) -> int:
        return self.queue.put("timeout", (timeout.error_type, timeout.strategy_id), timeout_row(timeout))

    def save_learner_state(self, state: LearnerRecord) -> int:
        return self.queue.put("learner", state.key, learner_row(state))

    def apply_retention(self, days: float) -> int:
        return self.queue.put("retention", None, float(days))

    def wait_durable(self, seq: int, timeout: float | None = None) -> Awaitable[None]:
        return self.durability.wait_durable(seq, timeout)

    async def flush(self, timeout: float | None = None, seq: int | None = None) -> None:
        await self.durability.flush(timeout, seq)

    def committed_seq(self) -> int:
        """Every write numbered up to this is in the tables, the lazily written group rows too."""
        return self.durability.groups_committed

    # -- connection management ----------------------------------------------------------------
    def _reconnect(self) -> bool:
        """A new connection (blocking; any thread but the loop's); True when it works."""
        try:
            self.database.reopen()
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self.health.last_error = reason + cannot_write_fix(reason, self.path)
            now = time.monotonic()
            # said once per cause (and once a minute while it lasts), not at every retry
            if reason != self._reconnect_said[0] or now - self._reconnect_said[1] > RECONNECT_LOG_EVERY:
                self._reconnect_said = (reason, now)
                logger.error("store: reconnect failed (retried every 2 s or less): %s", self.health.last_error)
            return False
        self._reconnect_said = ("", 0.0)
        self.health.reconnects += 1
        logger.warning("store: reconnected to %s", self.path)
        self.queue.wake.set()
        return True

    async def reconnect(self) -> bool:
        """Open a new connection (every cursor follows it) and verify it with a query."""
        ok = await asyncio.to_thread(self._reconnect)
        if ok:
            await self.read(lambda cur: cur.execute("SELECT count(*) FROM error_reports").fetchone())
        return ok

    def break_connection(self) -> None:
        """Fault injection: close the live connection as a crashed database link would."""
        self.database.break_connection()

    # -- reads ------------------------------------------------------------------------------------
    async def read(self, fn: Callable[[Cursor], R]) -> R:
        """``fn(cursor)`` on the store's reader thread (the store's own tests and tools)."""
        return await self.reads.read(fn)

    async def idempotency_keys(self, keys: list[str]) -> dict[str, IdempotencyRecord]:
        return await self.reads.read(lambda cur: keys_of(cur, keys))

    async def claim_idempotency_key(self, claim: IdempotencyRecord, lease: float) -> IdempotencyRecord | None:
        """One process owns the file: its in-memory claims are enough (see web/idempotency.py)."""
        return None

    async def ping(self) -> bool:
        return await self.reads.ping()

    async def find_groups(self, fingerprints: list[str]) -> dict[str, tuple[GroupRecord, LevelRecord | None]]:
        """fingerprint -> (its stored group, open first; its level) for those the store holds, by
        the index on the fingerprint (see base.GroupLookup)."""
        return await self.reads.find_groups(fingerprints)

    async def bulk_load(self, groups: list[GroupRecord], occurrences: list[OccurrenceRecord]) -> None:
        """Append whole groups and their occurrences in one transaction through DuckDB's appender:
        imports and benchmarks (the groups must be new to the store)."""
        await self.reads.bulk_load(groups, occurrences)

    # -- health -----------------------------------------------------------------------------------
    def status(self) -> StoreStatus:
        q, h = self.queue, self.health
        return StoreStatus(
            ok=h.failing_since is None and self.database.is_open and self.watch.healthy,
            path=self.path,
            **h.fields(q.seq - self.durability.committed, q.occurrences_queued, q.dropped_occurrences,
                       self.database.schema_version, self.reads.skipped_rows),
            fallback=self.fallback_reason,
            seed_migration=self.seed_migration,
            issues=tuple(self.watch.issues()),
            recreated=self.watch.recreated,
        )
