"""How far the DuckDB writer got, and who waits for it: ``wait_durable(seq)`` and ``flush``.

The writer thread moves ``committed`` (every write numbered up to it is committed: occurrences,
new groups, upserts, operations) and ``groups_committed`` (the rows of known groups, written
lazily, too), notes the writes the database refused, and asks the loop to release the waiters.
"""

from __future__ import annotations

import asyncio
import heapq
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from coordinator_plugins.error_handling.storage.base import StoreClosed, WriteRefused
from coordinator_plugins.error_handling.storage.duckdb.queue import WriteQueue
from coordinator_plugins.error_handling.storage.durability import Waiters, wait_within

SWEEP_INTERVAL = 0.25  # how often the deadlines of durability waits are checked (s)
# A store failing this long (s) fails the durability waits that have a timeout at once (the
# writes stay queued and may still be committed): a client hears 503 in seconds, not at its timeout.
FAIL_FAST_AFTER = 2.0
REFUSED_KEPT = 10_000  # refused write numbers remembered for a wait that comes after the commit


class _Done:
    """An awaitable that is done already (the write was committed before anyone waited)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # (a generator that ends at once)


_DONE = _Done()


async def _raise(exc: BaseException) -> None:
    raise exc


class Durability:
    """Shared by the store (waits, on the loop) and its writer (progress, on its thread)."""

    def __init__(
        self, queue: WriteQueue, last_error: Callable[[], str | None], failing_for: Callable[[], float] = lambda: 0.0
    ) -> None:
        self.queue = queue
        self.last_error = last_error
        self.failing_for = failing_for  # seconds the writer has been failing (0 while it commits)
        self.accepting = False  # the writer runs: a wait can be answered
        self.committed = 0
        self.groups_committed = 0
        self.forced = 0  # a flush asked for the group rows through this write number
        self._refused: dict[int, str] = {}  # seq -> why the database refused it (the latest REFUSED_KEPT)
        self._refused_lock = threading.Lock()
        self._waiters = Waiters()
        self._flush_waiters = Waiters()
        # (deadline, id, future) of the waiters that have a timeout; one sweeping timer serves
        # them all, cheaper per request than a timer per wait (see wait_durable).
        self._deadlines: list[tuple[float, int, asyncio.Future[None]]] = []
        self._sweeper: asyncio.TimerHandle | None = None

    # -- on the loop ------------------------------------------------------------------------------
    def wait_durable(self, seq: int, timeout: float | None = None) -> Awaitable[None]:
        """An awaitable that returns once the write numbered ``seq`` is committed. TimeoutError
        when it is not within ``timeout`` seconds (checked every SWEEP_INTERVAL, so up to that much
        later); StoreClosed when the store closes first; WriteRefused when the database refused
        that very write on its data.

        Not a coroutine: a pending write's awaitable is its future itself, so the request that
        waits for its 202 resumes through one frame fewer (this runs once per reported error)."""
        if seq <= self.committed:
            reason = self._refused.get(seq)
            return _DONE if reason is None else _raise(WriteRefused(reason))
        loop = self.queue.loop
        if not self.accepting or loop is None:
            return _raise(StoreClosed("store is not open"))
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.add(seq, fut)
        if self.queue.writer_idle:
            # Someone waits for this write: an idle writer starts now, not at the end of this
            # turn of the loop (as for writes nobody waits for, see WriteQueue._mark). Under a
            # closed-loop load (clients that each wait for their 202) this is the latency that
            # bounds throughput; measured with wrk -c64, about 5 ms of it per commit.
            self.queue.wake.set()
        if timeout is not None:
            heapq.heappush(self._deadlines, (time.monotonic() + timeout, id(fut), fut))
            if self._sweeper is None:
                self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep)
        return fut

    def _sweep(self) -> None:
        """Fail the waits whose deadline passed; forget the ones already released."""
        self._sweeper = None
        now = time.monotonic()
        dl = self._deadlines
        down = self.failing_for() >= FAIL_FAST_AFTER  # every wait with a deadline fails now
        while dl and (down or dl[0][2].done() or dl[0][0] <= now):
            _, _, fut = heapq.heappop(dl)
            if not fut.done():
                fut.set_exception(TimeoutError(f"write not durable in time (last error: {self.last_error()})"))
        loop = self.queue.loop
        if dl and loop is not None and not loop.is_closed():
            self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep)

    async def flush(self, timeout: float | None = None, seq: int | None = None) -> None:
        """Wait until everything queued so far (with ``seq``: the writes numbered up to it), group
        rows included, is committed; TimeoutError after ``timeout`` seconds (the writes stay
        queued). Writing the pending group rows is forced only when they are needed."""
        seq = self.queue.seq if seq is None else min(seq, self.queue.seq)
        if seq <= self.groups_committed:
            return
        if not self.accepting:
            raise StoreClosed("store is not open")
        self.forced = max(self.forced, seq)
        self.queue.wake.set()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.add(seq, fut)
        await wait_within(
            fut, timeout, lambda: f"store: writes not flushed within {timeout:g} s (last error: {self.last_error()})"
        )

    def release(self) -> None:
        """Release the waits whose write is committed; a write the database refused fails its
        own waiter (WriteRefused), and no other."""
        self._waiters.release(self.committed, self._refused.get)
        self._flush_waiters.release(self.groups_committed)
        # Waits end in about the order of their deadlines: the released ones are forgotten now,
        # not at the next sweep (up to SWEEP_INTERVAL later), which kept thousands of futures alive.
        dl = self._deadlines
        while dl and dl[0][2].done():
            heapq.heappop(dl)

    def waiting_with_deadline(self) -> int:
        """Waits with a timeout not yet released nor expired (forgotten once they are)."""
        return len(self._deadlines)

    def close(self) -> None:
        """The store closed: every pending wait fails with StoreClosed."""
        self.accepting = False
        for waiters in (self._waiters, self._flush_waiters):
            waiters.fail(lambda: StoreClosed("store closed before the write was durable"))
        self._deadlines.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    # -- on the writer thread ----------------------------------------------------------------------
    def group_rows_wanted(self) -> bool:
        """A flush waits for group rows not committed yet."""
        return self.forced > self.groups_committed

    def refuse(self, seqs: list[int], reason: str) -> None:
        """The database refused the writes numbered ``seqs`` (0: nobody waits on it)."""
        with self._refused_lock:
            for seq in seqs:
                if seq:
                    self._refused[seq] = reason
            while len(self._refused) > REFUSED_KEPT:
                del self._refused[next(iter(self._refused))]

    def notify(self) -> None:
        """Release the waiters on the loop (from the writer thread), unless the loop is gone."""
        loop = self.queue.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self.release)
            except RuntimeError:  # closed meanwhile
                pass
