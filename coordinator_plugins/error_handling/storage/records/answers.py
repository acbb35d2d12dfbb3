"""What a store answers beyond single records: the state restored at startup, a page of groups
and its query, totals over everything stored, and the store's health."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from coordinator_plugins.error_handling.storage.records.fingerprints import StoredFingerprints
from coordinator_plugins.error_handling.storage.records.groups import GroupRecord
from coordinator_plugins.error_handling.storage.records.learned import (
    LearnerRecord,
    LevelRecord,
    StrategyScore,
    TimeoutRecord,
)


@dataclass(frozen=True, slots=True)
class StoredState:
    """Everything restored at startup. ``skipped`` counts stored rows that could not be read
    (an unknown error type, broken JSON, ...): they are left out, never fatal."""

    groups: list[GroupRecord]
    levels: list[LevelRecord]
    scores: list[StrategyScore]
    timeouts: list[TimeoutRecord]
    learner: list[LearnerRecord]
    reconciled: int = 0
    skipped: int = 0
    # For exact grouping past the memory cap (a store without fingerprint lookups leaves them
    # empty): the fingerprints of recent groups not among ``groups``, looked up when they recur
    # (a Bloom filter: a few bytes a group, however many are stored);
    # the open and open critical groups of the whole store (None: count ``groups``); the
    # stopped recoveries (error id, reason) of groups not necessarily among ``groups``.
    stored_fingerprints: StoredFingerprints = field(default_factory=StoredFingerprints)
    open_total: int | None = None
    critical_open: int | None = None
    stopped: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class GroupQuery:
    """Filters of a group listing. ``status``: open (anything not resolved), resolved or all;
    ``min_rank``: the least severity rank; ``after``: the cursor of the previous page."""

    status: str = "open"
    component: str | None = None
    min_rank: int | None = None
    error_type: str | None = None
    limit: int = 100
    after: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class GroupPage:
    """One page of groups, newest ``last_seen`` first, as API items (``LIST_FIELDS``).
    ``next_cursor`` is (last_seen ISO, error_id) of the last item when more follow."""

    items: list[dict[str, Any]]
    next_cursor: tuple[str, str] | None


@dataclass(frozen=True, slots=True)
class StoreTotals:
    """Counts over everything stored (for diagnostics and checks)."""

    groups: int
    occurrences: int
    aggregated: int
    strategy_runs: int
    levels: int


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """The store's health, for diagnostics and metrics."""

    ok: bool
    path: str
    pending_writes: int = 0
    queued_occurrences: int = 0
    dropped_occurrences: int = 0
    dropped_writes: int = 0
    commits: int = 0
    rows_written: int = 0
    reconnects: int = 0
    last_error: str | None = None
    failing_for_seconds: float = 0.0
    fallback: str | None = None
    seed_migration: Mapping[str, Any] | None = None
    schema_version: int = 0
    skipped_rows: int = 0
    issues: tuple[str, ...] = ()
    recreated: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["issues"] = list(self.issues)
        out["seed_migration"] = dict(self.seed_migration) if self.seed_migration else None
        return out
