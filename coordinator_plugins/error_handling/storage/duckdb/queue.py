"""The writes queued on the event loop for the DuckDB writer thread, and the signal that wakes it.

Writes never block the loop: each takes a short lock, adds itself to the batch being gathered
(:class:`~.batch.WriteBatch`) and gets its write number (seq). Occurrences are buffered
column-wise (lists of untracked atoms, so a storm does not fill the garbage collector's old
generation), groups as a map of dirty reports, and the rarer writes as a list of operations; the
writer swaps the whole batch out under the same lock.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from coordinator_plugins.error_handling.storage.duckdb.batch import WriteBatch
from coordinator_plugins.error_handling.storage.duckdb.schema import UPSERTS
from coordinator_plugins.error_handling.storage.records import GroupRecord, OccurrenceRecord


class Wake:
    """The writer's wake-up signal: ``threading.Event`` without its Condition. A lock held means
    "nothing to do"; ``set`` releases it (never blocks, from any thread) and ``wait`` takes it
    back. With an Event, the loop's ``set`` could block on the Condition's own lock while the
    writer held it, and then wait for the GIL the writer had meanwhile: a convoy on the loop."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:  # set already
            pass

    def is_set(self) -> bool:
        return not self._lock.locked()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a ``set``, and consume it (the signal is clear again)."""
        return self._lock.acquire(True, timeout)

    def clear(self) -> None:
        self._lock.acquire(False)


class WriteQueue:
    """What is queued and not yet taken by the writer. ``limit``: occurrences whose rows may wait
    at once; past it an occurrence keeps only its count (its group's row carries it), counted in
    ``dropped_occurrences``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.batch = WriteBatch()
        self.seq = 0  # the number of the last write queued
        self.occurrences_queued = 0  # occurrence rows queued or being written, not yet committed
        self.dropped_occurrences = 0
        self.wake = Wake()
        self.writer_idle = False  # the writer waits for writes (set by the writer thread)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._wake_soon = False  # a wake of the writer is scheduled on the loop

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Queue from ``loop`` (the store opened on it)."""
        self.loop = loop
        self._wake_soon = False

    def _mark(self) -> int:
        self.seq += 1
        self.batch.seq = self.seq
        if asyncio._get_running_loop() is not self.loop:  # another thread (or loop)
            self.wake.set()
        elif self.writer_idle and not self._wake_soon:
            # On the loop, an idle writer is woken once per turn of the loop, after the callbacks
            # that are ready now (a burst of requests) have queued their writes: one commit
            # carries them all, and the writer is not woken (nor the GIL handed to it) per write.
            # A busy writer is not woken at all: it looks at the batch before it waits again.
            self._wake_soon = True
            try:
                self.loop.call_soon(self._wake_writer)  # type: ignore[union-attr]
            except RuntimeError:  # the loop is closed
                self._wake_writer()
        return self.seq

    def _wake_writer(self) -> None:
        self._wake_soon = False
        self.wake.set()

    # -- writes (on the loop, or any thread) ---------------------------------------------------
    def occurrence(
        self, occurrence: OccurrenceRecord, group: GroupRecord | None, with_key: tuple[Any, ...] | None = None
    ) -> int:
        """``with_key``: the row of the report's idempotency key, queued under the same lock (so in
        the same batch, one commit) as the occurrence."""
        with self.lock:
            b = self.batch
            seq = self._mark()
            if with_key is not None:
                b.upserts.setdefault("idempotency", {})[with_key[0]] = with_key
                b.upsert_seq.setdefault(("idempotency", with_key[0]), []).append(seq)
            if self.occurrences_queued >= self.limit:
                self.dropped_occurrences += 1  # the group row still carries the count
                # no row of its own: the write stands or falls with its group's count
                b.group_seq.setdefault(occurrence.error_id, []).append(seq)
            else:
                self.occurrences_queued += 1
                b.add_occurrence(occurrence, seq)  # its seq rides with its row (occ_seq)
            if group is None:
                b.add_count(occurrence.error_id, occurrence.occurred_at)
            else:
                b.add_group(group, 1)
            return seq

    def group(self, group: GroupRecord) -> int:
        with self.lock:
            b = self.batch
            # a group never written is inserted with the count it has; a stored count is kept
            new = not group.stored and group.error_id not in b.deltas
            b.add_group(group, group.aggregated_count if new else 0)
            seq = self._mark()
            b.group_seq.setdefault(group.error_id, []).append(seq)
            return seq

    def put(self, kind: str, key: Any, payload: Any) -> int:
        """An upsert by ``key`` (the latest wins) for a kind of ``schema.UPSERTS``, else an operation."""
        with self.lock:
            b = self.batch
            seq = self._mark()
            if kind in UPSERTS:
                b.upserts.setdefault(kind, {})[key] = payload
                b.upsert_seq.setdefault((kind, key), []).append(seq)
            else:
                b.ops.append((kind, payload))
                b.ops_seq.append(seq)
            return seq

    # -- the writer's side ------------------------------------------------------------------------
    def empty(self) -> bool:
        return self.batch.seq == 0

    def gathered(self) -> int:
        """Occurrences in the batch being gathered."""
        return len(self.batch.occ_id)

    def take(self) -> WriteBatch | None:
        """The batch gathered so far (a new one starts), or None when nothing was queued."""
        with self.lock:
            b = self.batch
            if b.seq == 0:
                return None
            self.batch = WriteBatch()
            return b

    def written(self, occurrences: int) -> None:
        """``occurrences`` rows of taken batches are committed (or given up)."""
        with self.lock:
            self.occurrences_queued -= occurrences
