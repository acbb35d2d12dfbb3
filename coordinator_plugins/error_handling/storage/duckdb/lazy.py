"""The rows of groups the table already has, written lazily by the DuckDB writer.

They are derived from the occurrences, which are always durable first: a group's latest
snapshot, the sum of its count increments and its latest occurrence wait here and are written
at most every ``interval`` seconds, when many are pending, at shutdown, or when a flush asks
(``Durability.forced``). A crash loses none of them: ``queries.reconcile_counts`` recounts the
occurrences a group's row does not include at the next start. Used on the writer thread only.
"""

from __future__ import annotations

import time
from datetime import datetime

from coordinator_plugins.error_handling.storage.duckdb.batch import GroupWrite, WriteBatch
from coordinator_plugins.error_handling.storage.records import GroupRecord

MANY = 5000  # pending groups written at once, whatever the interval


class LazyGroups:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.groups: dict[str, GroupRecord] = {}  # the latest snapshot of a known group
        self.delta: dict[str, int] = {}  # occurrences it gained since its row was written
        self.seen: dict[str, datetime] = {}  # its latest occurrence
        self.since = 0.0  # monotonic time the oldest pending update was deferred

    def pending(self) -> bool:
        return bool(self.groups or self.delta)

    def due(self, forced: bool, stopping: bool) -> bool:
        """Whether the pending rows go with the next commit."""
        return self.pending() and (
            forced or len(self.delta) + len(self.groups) > MANY or stopping
            or time.monotonic() - self.since >= self.interval
        )

    def defer(self, batch: WriteBatch) -> None:
        """Groups the table has are written lazily: their latest snapshot, the sum of their
        increments and their latest occurrence move here once (a retry of this batch must not
        count them twice). New groups stay: they are written with their first occurrence."""
        if not self.pending():
            self.since = time.monotonic()
        new = batch.new
        keep: dict[str, GroupRecord] = {}
        for gid, g in batch.groups.items():
            if gid in new:
                keep[gid] = g
            else:
                self.groups[gid] = g
        batch.groups = keep
        deltas: dict[str, int] = {}
        lazy_delta = self.delta
        for gid, d in batch.deltas.items():
            if gid in new:
                deltas[gid] = d
            else:
                lazy_delta[gid] = lazy_delta.get(gid, 0) + d
        batch.deltas = deltas
        seen: dict[str, datetime] = {}
        for gid, ts in batch.seen.items():
            if gid in new:
                seen[gid] = ts
            else:
                self.seen[gid] = ts
        batch.seen = seen

    def rows(self, ids: list[str] | None = None) -> tuple[list[GroupWrite], list[tuple[str, int, datetime]]]:
        """(known groups with a snapshot: snapshot, increment, latest occurrence; groups that only
        gained occurrences: id, increment, latest occurrence), of ``ids`` or of all pending."""
        delta, seen, groups = self.delta, self.seen, self.groups
        if ids is None:
            known = [(g, delta.get(gid, 0), seen.get(gid)) for gid, g in groups.items()]
            counts = [(gid, d, seen[gid]) for gid, d in delta.items() if gid not in groups]
            return known, counts
        known = [(groups[g], delta.get(g, 0), seen.get(g)) for g in ids if g in groups]
        counts = [(g, delta[g], seen[g]) for g in ids if g not in groups and g in delta and g in seen]
        return known, counts

    def ids(self) -> list[str]:
        """Every pending group, once."""
        return list({**dict.fromkeys(self.groups), **dict.fromkeys(self.delta)})

    def drop(self, ids: list[str]) -> None:
        """Forget ``ids`` (written, or refused)."""
        for g in ids:
            self.groups.pop(g, None)
            self.delta.pop(g, None)
            self.seen.pop(g, None)

    def clear(self) -> None:
        self.groups.clear()
        self.delta.clear()
        self.seen.clear()
