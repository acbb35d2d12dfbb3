"""The store's sorted views of every group, for keyset paging that does not grow with the data.

DuckDB follows no index in an ORDER BY: a page of ``ORDER BY last_seen DESC, error_id DESC`` is
a top-N over the whole table (and fetching 100 rows by ``error_id IN (...)`` a scan too). So the
store keeps, for every group, its key ``(last_seen, error_id)`` in sorted sets (:mod:`.sortedkeys`),
with the columns the API filters on and the row's ``rowid``; a page walks the sets from the cursor
and reads only its own rows, by rowid (DuckDB fetches those directly; rowids of error_reports are
stable, as no group row is ever deleted, and a fetched row whose error_id does not match is read
again by error_id).

A filter must not walk past the keys it does not want (a component with a few groups deep in the
order would otherwise scan the whole view to fill a page), so every group's key is in three sets:
the set of all groups, the set of its *kind* (open or not, error type, severity rank) and the set
of its component's kind. A filtered page merges, newest first, the few sets whose groups all match
(those of the kinds the filter accepts, of the component when it names one); each set holds only
live keys (a group's key moves when its last_seen grows or its kind changes), so a page reads
``limit`` keys plus one step per set, whatever the depth and however selective the filter.

The writer thread notes every group row and count it commits; the views are built from the table
the first time a page is asked for.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from coordinator_plugins.error_handling.model import ResolutionStatus
from coordinator_plugins.error_handling.storage.duckdb.sortedkeys import Key, SortedKeys
from coordinator_plugins.error_handling.storage.records import GroupRecord

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_CHUNK = 512  # groups noted per hold of the lock (a page waits at most that long)

# error_id -> [last_seen in us, open, component, severity rank, error type, rowid or None]
Entry = list[Any]
Kind = tuple[bool, str, int]  # (open, error type, severity rank)


def micros(ts: datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - _EPOCH) // _US


def parse_cursor_time(value: str) -> int:
    """The microseconds of a cursor's ISO time (ValueError when it is not one)."""
    return micros(datetime.fromisoformat(value))


def from_micros(us: int) -> datetime:
    return _EPOCH + us * _US


def _kind(e: Entry) -> Kind:
    return (e[1], e[4], e[3] or 0)


class GroupOrder:
    """Every group's (last_seen, error_id) in order, overall, by kind and by component's kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._all = SortedKeys()
        self._kinds: dict[Kind, SortedKeys] = {}
        self._comps: dict[str, dict[Kind, SortedKeys]] = {}
        self.built = False

    def __len__(self) -> int:
        return len(self._entries)

    # -- building and keeping up -----------------------------------------------------------
    def index_sizes(self) -> tuple[int, int, int]:
        """Keys held by the whole index, by the per-kind indexes and by the per-component ones:
        each equals ``len(self)`` when no move left a key behind."""
        with self._lock:
            return (len(self._all), sum(len(s) for s in self._kinds.values()),
                    sum(len(s) for by in self._comps.values() for s in by.values()))

    def build(self, fetch: Callable[[], Iterable[tuple[Any, ...]]]) -> None:
        """From ``fetch()``: (error_id, last_seen us, open, component, rank, error_type, rowid) rows
        sorted by (last_seen, error_id), the whole table, read once. Run under the lock, so that a
        row committed meanwhile is either in what ``fetch`` reads or noted after."""
        with self._lock:
            if self.built:
                return
            keys: list[Key] = []
            entries: dict[str, Entry] = {}
            kinds: dict[Kind, list[Key]] = {}
            comps: dict[str, dict[Kind, list[Key]]] = {}
            for error_id, ls, is_open, component, rank, etype, rowid in fetch():
                key = (ls, error_id)
                keys.append(key)
                kind = (bool(is_open), etype, rank or 0)
                entries[error_id] = [ls, kind[0], component, rank, etype, rowid]
                kinds.setdefault(kind, []).append(key)
                comps.setdefault(component, {}).setdefault(kind, []).append(key)
            self._entries, self._all = entries, SortedKeys(keys)
            self._kinds = {k: SortedKeys(v) for k, v in kinds.items()}
            self._comps = {c: {k: SortedKeys(v) for k, v in by.items()} for c, by in comps.items()}
            self.built = True

    def note(self, groups: Iterable[tuple[GroupRecord, datetime | None]] = (),
             counts: Iterable[tuple[str, datetime]] = ()) -> None:
        """Rows just committed: ``groups`` (a snapshot and the latest occurrence, which moves its
        last_seen) and ``counts`` (error id and latest occurrence of a group that only gained
        occurrences). Their keys and filter columns as the table now has them."""
        rows = iter(groups)
        while chunk := list(itertools.islice(rows, _CHUNK)):
            with self._lock:
                if not self.built:
                    return  # built from the table later, these rows included
                for g, seen in chunk:
                    ts = g.last_seen if seen is None or seen < g.last_seen else seen
                    self._set(g.error_id, micros(ts), g.resolution_status is not ResolutionStatus.RESOLVED,
                              g.component, g.error_severity.rank, g.error_type.value)
        moved = iter(counts)
        while part := list(itertools.islice(moved, _CHUNK)):
            with self._lock:
                if not self.built:
                    return
                for error_id, seen in part:
                    e = self._entries.get(error_id)
                    if e is not None:
                        self._set(error_id, micros(seen), e[1], e[2], e[3], e[4])

    def _set(self, error_id: str, ls: int, is_open: bool, component: str, rank: int, etype: str) -> None:
        """One group's key and filter columns (under the lock; last_seen never moves back: the
        table keeps the greatest)."""
        e = self._entries.get(error_id)
        if e is None:
            e = self._entries[error_id] = [ls, is_open, component, rank, etype, None]
            self._place(e, error_id)
            return
        if ls < e[0]:
            ls = e[0]
        if ls == e[0] and is_open is e[1] and component == e[2] and rank == e[3] and etype == e[4]:
            return
        self._unplace(e, error_id)
        e[0], e[1], e[2], e[3], e[4] = ls, is_open, component, rank, etype
        self._place(e, error_id)

    def _place(self, e: Entry, error_id: str) -> None:
        key = (e[0], error_id)
        kind = _kind(e)
        self._all.add(key)
        sk = self._kinds.get(kind)
        if sk is None:
            sk = self._kinds[kind] = SortedKeys()
        sk.add(key)
        by = self._comps.get(e[2])
        if by is None:
            by = self._comps[e[2]] = {}
        sk = by.get(kind)
        if sk is None:
            sk = by[kind] = SortedKeys()
        sk.add(key)

    def _unplace(self, e: Entry, error_id: str) -> None:
        key = (e[0], error_id)
        kind = _kind(e)
        self._all.remove(key)
        sk = self._kinds[kind]
        sk.remove(key)
        if not sk:
            del self._kinds[kind]
        by = self._comps[e[2]]
        sk = by[kind]
        sk.remove(key)
        if not sk:
            del by[kind]
            if not by:
                del self._comps[e[2]]

    def set_rowids(self, pairs: Iterable[tuple[str, int]]) -> None:
        with self._lock:
            for error_id, rowid in pairs:
                e = self._entries.get(error_id)
                if e is not None:
                    e[5] = rowid

    # -- reading ------------------------------------------------------------------------------
    def sources(self, want_open: bool | None, component: str | None, min_rank: int | None,
                error_type: str | None) -> list[SortedKeys]:
        """The sets whose groups are exactly those the filter accepts (under the lock)."""
        if component is None and want_open is None and min_rank is None and error_type is None:
            return [self._all]
        table = self._kinds if component is None else self._comps.get(component, {})
        return [
            sk for (is_open, etype, rank), sk in table.items()
            if (want_open is None or is_open is want_open)
            and (error_type is None or etype == error_type)
            and (min_rank is None or rank >= min_rank)
        ]

    def page(
        self,
        status: str = "open",
        component: str | None = None,
        min_rank: int | None = None,
        error_type: str | None = None,
        limit: int = 100,
        after: tuple[int, str] | None = None,
    ) -> list[tuple[str, int | None, int]]:
        """Up to ``limit`` (error_id, rowid, last_seen us) newest first, strictly after the
        ``after`` key (last_seen us, error_id)."""
        want_open = True if status == "open" else (False if status == "resolved" else None)
        with self._lock:
            entries = self._entries
            sources = self.sources(want_open, component, min_rank, error_type)
            keys: Iterator[Key]
            if len(sources) == 1:
                keys = sources[0].below(after)
            else:
                keys = heapq.merge(*(sk.below(after) for sk in sources), reverse=True)
            return [(key[1], entries[key[1]][5], key[0]) for key in itertools.islice(keys, limit)]
