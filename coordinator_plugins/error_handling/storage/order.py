"""The store's sorted view of every group, for keyset paging that does not grow with the data.

DuckDB follows no index in an ORDER BY: a page of ``ORDER BY last_seen DESC, error_id DESC`` is
a top-N over the whole table (and fetching 100 rows by ``error_id IN (...)`` a scan too). So the
store keeps, for every group, its key ``(last_seen, error_id)`` in a sorted list, with the columns
the API filters on and the row's ``rowid``; a page walks the list from the cursor (bisect) and
reads only its own rows, by rowid (DuckDB fetches those directly; rowids of error_reports are
stable, as no group row is ever deleted, and a fetched row whose error_id does not match is read
again by error_id).

A group's ``last_seen`` only grows, so an update appends its new key at the end (the newest) and
leaves the old one behind as stale (skipped, and compacted away once stale keys outnumber live
ones). The writer thread notes every group row and count it commits; the view is built from the table
the first time a page is asked for.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from coordinator_plugins.error_handling.model import ResolutionStatus
from coordinator_plugins.error_handling.storage.records import GroupRecord

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

# error_id -> [last_seen in us, open, component, severity rank, error type, rowid or None]
Entry = list[Any]


def micros(ts: datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - _EPOCH) // _US


def parse_cursor_time(value: str) -> int:
    """The microseconds of a cursor's ISO time (ValueError when it is not one)."""
    return micros(datetime.fromisoformat(value))


def from_micros(us: int) -> datetime:
    return _EPOCH + us * _US


class GroupOrder:
    """Every group's (last_seen, error_id) in order, with its filter columns and rowid."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: list[tuple[int, str]] = []  # ascending; may hold stale keys
        self._entries: dict[str, Entry] = {}
        self._stale = 0
        self.built = False

    def __len__(self) -> int:
        return len(self._entries)

    # -- building and keeping up -----------------------------------------------------------
    def build(self, fetch: Callable[[], Iterable[tuple[Any, ...]]]) -> None:
        """From ``fetch()``: (error_id, last_seen us, open, component, rank, error_type, rowid) rows
        sorted by (last_seen, error_id), the whole table, read once. Run under the lock, so that a
        row committed meanwhile is either in what ``fetch`` reads or noted after."""
        with self._lock:
            if self.built:
                return
            keys: list[tuple[int, str]] = []
            entries: dict[str, Entry] = {}
            for error_id, ls, is_open, component, rank, etype, rowid in fetch():
                keys.append((ls, error_id))
                entries[error_id] = [ls, bool(is_open), component, rank, etype, rowid]
            self._keys, self._entries, self._stale = keys, entries, 0
            self.built = True

    def note(self, groups: Iterable[tuple[GroupRecord, datetime | None]] = (),
             counts: Iterable[tuple[str, datetime]] = ()) -> None:
        """Rows just committed: ``groups`` (a snapshot and the latest occurrence, which moves its
        last_seen) and ``counts`` (error id and latest occurrence of a group that only gained
        occurrences). Their keys and filter columns as the table now has them."""
        with self._lock:
            if not self.built:
                return  # built from the table later, these rows included
            entries = self._entries
            for g, seen in groups:
                ts = g.last_seen if seen is None or seen < g.last_seen else seen
                ls = micros(ts)
                e = entries.get(g.error_id)
                is_open = g.resolution_status is not ResolutionStatus.RESOLVED
                if e is None:
                    entries[g.error_id] = [ls, is_open, g.component, g.error_severity.rank, g.error_type.value, None]
                    self._insert((ls, g.error_id))
                    continue
                e[1], e[3] = is_open, g.error_severity.rank
                self._move(e, ls, g.error_id)
            for error_id, seen in counts:
                e = entries.get(error_id)
                if e is not None:
                    self._move(e, micros(seen), error_id)
            if self._stale > max(1024, len(entries)):
                self._compact()

    def _move(self, e: Entry, ls: int, error_id: str) -> None:
        if ls > e[0]:  # last_seen never moves back (the table keeps the greatest)
            e[0] = ls
            self._stale += 1
            self._insert((ls, error_id))

    def _insert(self, key: tuple[int, str]) -> None:
        keys = self._keys
        if not keys or key > keys[-1]:
            keys.append(key)
        else:  # an older time than the newest key (a clock step back): in place
            bisect.insort(keys, key)

    def _compact(self) -> None:
        entries = self._entries
        self._keys = [k for k in self._keys if entries[k[1]][0] == k[0]]
        self._stale = 0

    def set_rowids(self, pairs: Iterable[tuple[str, int]]) -> None:
        with self._lock:
            for error_id, rowid in pairs:
                e = self._entries.get(error_id)
                if e is not None:
                    e[5] = rowid

    # -- reading ------------------------------------------------------------------------------
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
        out: list[tuple[str, int | None, int]] = []
        with self._lock:
            keys, entries = self._keys, self._entries
            i = bisect.bisect_left(keys, after) if after is not None else len(keys)
            want_open = True if status == "open" else (False if status == "resolved" else None)
            while i > 0 and len(out) < limit:
                i -= 1
                ls, error_id = keys[i]
                e = entries[error_id]
                if e[0] != ls:
                    continue  # stale: the group's newer key comes (came) elsewhere
                if want_open is not None and e[1] is not want_open:
                    continue
                if component is not None and e[2] != component:
                    continue
                if min_rank is not None and (e[3] or 0) < min_rank:
                    continue
                if error_type is not None and e[4] != error_type:
                    continue
                out.append((error_id, e[5], ls))
        return out
