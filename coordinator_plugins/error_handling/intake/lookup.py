"""Groups that are in the store but not in memory: looked up by fingerprint, in batches.

A miss in memory for a fingerprint the store may hold (its group was evicted, or not loaded at
startup) waits for a lookup on the store's reader thread, never on the event loop. Every
fingerprint missed while a lookup runs joins the next one, a single query for all of them, so a
burst after a restart costs a few queries, not one per group; and however many occurrences of one
fingerprint wait, it is looked up once, so they all fold into one group.

A write queued for an evicted group before it left memory (its resolution, its count) must be in
the row the lookup reads: the index keeps the number of that write (``GroupIndex.unsettled``) until
the store's rows hold it, and the lookup waits for that write alone (``flush(seq=...)``), never
for the rest of the queue; when the rows hold every write of the groups looked up, it does not
wait at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from coordinator_plugins.error_handling.intake.group import GroupIndex
from coordinator_plugins.error_handling.model import ErrorReport
from coordinator_plugins.error_handling.storage.base import GroupLookup
from coordinator_plugins.error_handling.storage.records import GroupRecord, LevelRecord

logger = logging.getLogger(__name__)


class StoredGroups:
    def __init__(
        self, store: Any, groups: GroupIndex, on_loaded: Callable[[ErrorReport, LevelRecord | None], None] | None = None
    ) -> None:  # a Store, maybe a GroupLookup too
        self.store = store
        self.groups = groups
        self.lookups = 0  # fingerprints looked up
        self.queries = 0  # store queries that did it
        self.failures = 0
        self.waits = 0  # queries that first waited for a queued write of an evicted group
        # Called with (report, its stored level row or None) when a group comes from the store.
        self.on_loaded = on_loaded
        self._waiting: dict[str, asyncio.Future[ErrorReport | None]] = {}
        self._queue: list[str] = []
        self._drainer: asyncio.Task[None] | None = None

    @property
    def supported(self) -> bool:
        return isinstance(self.store, GroupLookup)

    async def load(self, fp: str) -> ErrorReport | None:
        """The stored group of ``fp`` (None: the store has none), once it is in memory. It may be
        evicted again before the caller folds into it, in a burst larger than the cap: the caller
        uses the object returned, never a second lookup."""
        if not self.supported:
            return None  # a store without fingerprint lookups: grouping in memory only
        fut = self._waiting.get(fp)
        if fut is None:
            fut = self._waiting[fp] = asyncio.get_running_loop().create_future()
            self._queue.append(fp)
            if self._drainer is None:
                self._drainer = asyncio.ensure_future(self._drain())
        return await asyncio.shield(fut)

    async def _drain(self) -> None:
        try:
            while self._queue:
                fps, self._queue = self._queue, []
                try:
                    # A write still queued for one of these evicted groups (its resolution, its
                    # count): its row once that write is in it. Never the rest of the queue.
                    need = self.groups.unsettled(fps)
                    if need:
                        self.waits += 1
                        await self.store.flush(seq=need)
                    found = await self.store.find_groups(fps)
                except Exception as exc:  # the store cannot read: each occurrence opens a group in memory
                    self.failures += 1
                    logger.warning("error handling: looking up %d evicted group(s) failed (%r)", len(fps), exc)
                    found = None
                self.queries += 1
                for fp in fps:
                    group = None
                    if found is not None:
                        self.lookups += 1
                        group = self._adopt(fp, found.get(fp))
                    fut = self._waiting.pop(fp, None)
                    if fut is not None and not fut.done():
                        fut.set_result(group)
        finally:
            self._drainer = None
            for fut in self._waiting.values():  # cancelled (shutdown): nobody waits forever
                if not fut.done():
                    fut.set_result(None)
            self._waiting.clear()
            self._queue.clear()

    def _adopt(self, fp: str, found: tuple[GroupRecord, LevelRecord | None] | None) -> ErrorReport | None:
        if found is None:  # a false positive of the filter (it keeps it: one lookup, then in memory)
            return self.groups.by_fingerprint(fp)
        record, level = found
        report = record.to_report()
        # back in memory meanwhile (a resolve by id, a group still held elsewhere): that object
        present = self.groups.get(report.error_id) or self.groups.by_fingerprint(fp)
        if present is not None:
            return present
        self.groups.add(report, counted=True)  # the counters include stored groups already
        if self.on_loaded is not None:
            self.on_loaded(report, level)
        return report
