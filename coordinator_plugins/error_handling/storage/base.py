"""The storage seam: what the plugin needs from a database, in domain terms.

No cursor, no SQL and no table layout crosses this interface: callers hand over records
(``records.py``, frozen snapshots taken on the event loop) and get records or API-shaped dicts
back. Two kinds of method:

- writes (``record_*``, ``save_*``, ``apply_retention``) are queued and never block the loop; each
  returns a write sequence number, and ``await wait_durable(seq)`` returns once that write (and
  every one queued before it) is committed. A waiter is released only when its own rows are.
- reads are coroutines; they see every write that was durable when they started. Call
  ``flush`` first to see writes still queued (``flush(seq=n)``: those numbered up to ``n``).

Semantics every implementation keeps (``tests/test_store_contract.py`` checks them):

- ``record_occurrence`` appends the occurrence and adds one to its group's count, creating the
  group from the snapshot when the store does not have it (a snapshot is passed only when the
  group is new or changed beyond its count and ``last_seen``). The count is an increment, never
  last-writer-wins: ``save_group`` never overwrites a stored count.
- ``record_strategy_run`` appends; nothing updates a run.
- ``save_*`` of levels, scores, timeouts and learner state upsert by their key; the latest wins.
- after a restart, ``load_state`` returns everything acknowledged; a stored row that cannot be
  read (an unknown error type, broken JSON) is skipped and counted, never fatal.
- ``open`` applies the numbered schema migrations in one transaction and refuses a database whose
  schema is newer than the code (``SchemaTooNew``); ``close`` flushes what is queued.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol, runtime_checkable

from coordinator_plugins.error_handling.storage.records import (
    AliasRecord,
    GroupPage,
    GroupQuery,
    GroupRecord,
    IdempotencyRecord,
    LearnerRecord,
    LevelRecord,
    OccurrenceRecord,
    StoredState,
    StoreStatus,
    StoreTotals,
    StrategyRun,
    StrategyScore,
    TimeoutRecord,
)


class StoreError(RuntimeError):
    """Base of the errors a store raises."""


class StoreUnavailable(StoreError):
    """The database cannot be opened or reached (locked by another process, unreadable, ...)."""


class SchemaTooNew(StoreUnavailable):
    """The database was written by a newer version of the plugin: its schema is not understood."""


class StoreClosed(StoreError, ConnectionError):
    """The store closed (or never opened) before the write was durable."""


class WriteRefused(StoreError, ValueError):
    """The database refused this write on its data; the writes that shared its batch were
    committed. Nothing of it was acknowledged: its waiter fails, and no other."""


class StoreFull(StoreError):
    """The store cannot queue the write at all: it was refused, nothing was queued. (The DuckDB
    store never raises it: past ``write_queue_limit`` it keeps the count of an occurrence and
    drops its row, counted in ``StoreStatus.dropped_occurrences``.)"""


@runtime_checkable
class StoreReads(Protocol):
    """The reads of a store: coroutines, run off the event loop; each sees every write that was
    durable when it started."""

    async def load_state(self, regression_window: float, max_groups: int) -> StoredState:
        """What the plugin restores at startup: groups not resolved (or resolved within
        ``regression_window`` seconds), newest first, at most ``max_groups``; their levels; every
        score, timeout and learner state. Counts missed by a crash are reconciled first."""

    async def get_group(self, error_id: str) -> GroupRecord | None: ...

    async def list_groups(self, query: GroupQuery) -> GroupPage:
        """Groups newest ``last_seen`` first, keyset-paginated on (last_seen, error_id): each
        group appears on exactly one page."""

    async def unresolved_groups(self, component: str | None = None, min_rank: int | None = None) -> list[GroupRecord]:
        ...

    async def occurrences(self, error_id: str, limit: int = 100) -> list[OccurrenceRecord]:
        """A group's stored occurrences, newest first."""

    async def occurrence_series(
        self, error_id: str, buckets: int = 60, window: float | None = None
    ) -> dict[str, Any] | None:
        """Occurrences per clock-aligned bucket (API shape: start, end, step_seconds, counts,
        total); None for an unknown group."""

    async def alias(self, alias_id: str) -> AliasRecord | None:
        """The group that another id names (a seed error folded into it on migration), or None;
        ``get_group`` answers by a group's own id only."""

    async def recovery_level(self, error_id: str) -> LevelRecord | None: ...

    async def recovery_summary(self, limit: int = 100) -> dict[str, Any]:
        """The timeline: the latest levels (API shape ``errors``) and groups per level (``summary``)."""

    async def strategy_performance(
        self, error_type: str | None = None, strategy_id: str | None = None, days: int = 30
    ) -> dict[str, Any]:
        """Per-strategy aggregates of the runs of the last ``days`` (API shape)."""

    async def strategy_runs(self, error_id: str | None = None, limit: int = 1000) -> list[StrategyRun]:
        """Stored runs, newest first (every run, or one group's)."""

    async def strategy_scores(self) -> list[StrategyScore]:
        """The evidence learned per (key, strategy)."""

    async def timeouts(self) -> list[TimeoutRecord]: ...

    async def totals(self) -> StoreTotals: ...


@runtime_checkable
class Store(StoreReads, Protocol):
    """Persistence of the error-handling plugin (DuckDB embedded; PostgreSQL for a fleet): the
    reads of :class:`StoreReads`, and the lifecycle, writes and health below."""

    # -- lifecycle ------------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect, migrate, start writing. StoreUnavailable / SchemaTooNew when it cannot."""

    async def close(self) -> None:
        """Flush what is queued (bounded), stop, release every resource. Idempotent."""

    # -- writes: queued, never blocking; each returns a write sequence number -------------------
    def record_occurrence(
        self, occurrence: OccurrenceRecord, group: GroupRecord | None = None, key: IdempotencyRecord | None = None
    ) -> int:
        """Append ``occurrence`` and add one to its group's count. With ``group`` (a group new
        to the store, or one whose state changed beyond its count: severity, status) the group is
        created from the snapshot when absent and takes its other fields; without it only the count
        grows and ``last_seen`` moves to ``occurrence.occurred_at``. ``last_seen`` never moves back.
        With ``key`` (the report's idempotency key and its answer) the key is written in the same
        commit as the occurrence: stored together or not at all."""

    async def idempotency_keys(self, keys: list[str]) -> dict[str, IdempotencyRecord]:
        """The stored records of those of ``keys`` the store holds and that have not expired;
        one query for all of them."""

    async def claim_idempotency_key(self, claim: IdempotencyRecord, lease: float) -> IdempotencyRecord | None:
        """Make ``claim.key`` this process's before its report is counted: None when it is (a
        store only one process writes needs no claim), else the record that holds the key (see
        ``postgres/idempotency.py``)."""

    def save_group(self, group: GroupRecord) -> int:
        """Write a group's state (resolution, retries, severity, recovery level and details);
        never its count."""

    def record_strategy_run(self, run: StrategyRun) -> int:
        """Append one strategy run."""

    def save_recovery_level(self, level: LevelRecord) -> int: ...

    def save_strategy_score(self, score: StrategyScore) -> int: ...

    def save_timeout(self, timeout: TimeoutRecord) -> int: ...

    def save_learner_state(self, state: LearnerRecord) -> int: ...

    def apply_retention(self, days: float) -> int:
        """Delete occurrences and strategy runs older than ``days`` (groups stay)."""

    def wait_durable(self, seq: int, timeout: float | None = None) -> Awaitable[None]:
        """An awaitable (a coroutine, or a future) that returns once write ``seq`` is committed;
        TimeoutError after ``timeout`` seconds, StoreClosed when the store closes first."""

    async def flush(self, timeout: float | None = None, seq: int | None = None) -> None:
        """Return once everything queued so far (with ``seq``: every write numbered up to it, not
        the later ones) is committed, group rows included; TimeoutError after ``timeout``."""

    def committed_seq(self) -> int:
        """The write number through which every write is in the tables, group rows included: a
        read started now sees each of them (``flush(seq=n)`` returns at once for ``n`` up to it)."""

    # -- health ----------------------------------------------------------------------------------
    def status(self) -> StoreStatus: ...

    async def ping(self) -> bool:
        """True when a trivial read succeeds now."""

    async def reconnect(self) -> bool:
        """Drop the connection and open a new one (a recovery action); True when it works."""


@runtime_checkable
class GroupLookup(Protocol):
    """What a store offers for exact grouping past ``max_groups_in_memory`` (the DuckDB store
    does): a group evicted from memory, or not loaded at startup, is found by its fingerprint
    when it recurs. A store without it groups in memory only."""

    async def find_groups(self, fingerprints: list[str]) -> dict[str, tuple[GroupRecord, LevelRecord | None]]:
        """fingerprint -> (its stored group: the open one, else the one seen last; its level)
        for those of ``fingerprints`` the store holds; one query for all of them."""


__all__ = [
    "GroupLookup",
    "SchemaTooNew",
    "Store",
    "StoreClosed",
    "StoreError",
    "StoreFull",
    "StoreReads",
    "StoreUnavailable",
    "WriteRefused",
]
