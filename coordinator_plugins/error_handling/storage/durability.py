"""Waiting for durability: ``wait_durable(seq)`` and ``flush``, released by the writer thread
(through the loop) as commits land. Mixed into :class:`DuckDBStore`; ``wait_within`` (a wait
under a timeout) serves the PostgreSQL store too."""

from __future__ import annotations

import asyncio
import heapq
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from coordinator_plugins.error_handling.storage.base import StoreClosed, WriteRefused

SWEEP_INTERVAL = 0.25  # how often the deadlines of durability waits are checked (s)


async def wait_within(fut: asyncio.Future[None], timeout: float | None, why: Callable[[], str]) -> None:
    """Await a store's wait future; after ``timeout`` seconds (None: no limit) a TimeoutError
    saying ``why()`` at that moment. The future stays queued and completes later, unheard."""
    if timeout is None:
        await fut
        return
    try:
        await asyncio.wait_for(asyncio.shield(fut), timeout)
    except TimeoutError:
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # nobody waits for it any more
        raise TimeoutError(why()) from None


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
    _seq: int
    _committed: int
    _groups_committed: int
    _force_groups: int
    _wake: Wake
    _writer_idle: bool
    _writer: threading.Thread | None
    _loop: asyncio.AbstractEventLoop | None
    _waiters: list[tuple[int, int, asyncio.Future[None]]]
    _flush_waiters: list[tuple[int, int, asyncio.Future[None]]]
    _deadlines: list[tuple[float, int, asyncio.Future[None]]]
    _sweeper: asyncio.TimerHandle | None
    _refused: dict[int, str]
    last_error: str | None

    def wait_durable(self, seq: int, timeout: float | None = None) -> Awaitable[None]:
        """An awaitable that returns once the write numbered ``seq`` is committed. TimeoutError
        when it is not within ``timeout`` seconds (checked every SWEEP_INTERVAL, so up to that much
        later); StoreClosed when the store closes first; WriteRefused when the database refused
        that very write on its data.

        Not a coroutine: a pending write's awaitable is its future itself, so the request that
        waits for its 202 resumes through one frame fewer (this runs once per reported error)."""
        if seq <= self._committed:
            reason = self._refused.get(seq)
            return _DONE if reason is None else _raise(WriteRefused(reason))
        if self._writer is None or self._loop is None:
            return _raise(StoreClosed("store is not open"))
        fut: asyncio.Future[None] = self._loop.create_future()
        heapq.heappush(self._waiters, (seq, id(fut), fut))
        if self._writer_idle:
            # Someone waits for this write: an idle writer starts now, not at the end of this
            # turn of the loop (as for writes nobody waits for, see DuckDBStore._mark). Under a
            # closed-loop load (clients that each wait for their 202) this is the latency that
            # bounds throughput; measured with wrk -c64, about 5 ms of it per commit.
            self._wake.set()
        if timeout is not None:
            heapq.heappush(self._deadlines, (time.monotonic() + timeout, id(fut), fut))
            if self._sweeper is None:
                self._sweeper = self._loop.call_later(SWEEP_INTERVAL, self._sweep)
        return fut

    def _sweep(self) -> None:
        """Fail the waits whose deadline passed; forget the ones already released."""
        self._sweeper = None
        now = time.monotonic()
        dl = self._deadlines
        while dl and (dl[0][2].done() or dl[0][0] <= now):
            _, _, fut = heapq.heappop(dl)
            if not fut.done():
                fut.set_exception(TimeoutError(f"write not durable in time (last error: {self.last_error})"))
        if dl and self._loop is not None and not self._loop.is_closed():
            self._sweeper = self._loop.call_later(SWEEP_INTERVAL, self._sweep)

    def committed_seq(self) -> int:
        """Every write numbered up to this is in the tables, the lazily written group rows too."""
        return self._groups_committed

    async def flush(self, timeout: float | None = None, seq: int | None = None) -> None:
        """Wait until everything queued so far (with ``seq``: the writes numbered up to it), group
        rows included, is committed; TimeoutError after ``timeout`` seconds (the writes stay
        queued). Writing the pending group rows is forced only when they are needed."""
        seq = self._seq if seq is None else min(seq, self._seq)
        if seq <= self._groups_committed:
            return
        if self._writer is None:
            raise StoreClosed("store is not open")
        self._force_groups = max(self._force_groups, seq)
        self._wake.set()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._flush_waiters, (seq, id(fut), fut))
        await wait_within(
            fut, timeout, lambda: f"store: writes not flushed within {timeout:g} s (last error: {self.last_error})"
        )

    def _release_waiters(self) -> None:
        """Release the waits whose write is committed; a write the database refused fails its
        own waiter (WriteRefused), and no other."""
        refused = self._refused
        for waiters, done in ((self._waiters, self._committed), (self._flush_waiters, self._groups_committed)):
            while waiters and waiters[0][0] <= done:
                seq, _, fut = heapq.heappop(waiters)
                if fut.done():
                    continue
                reason = refused.get(seq) if waiters is self._waiters else None
                if reason is not None:
                    fut.set_exception(WriteRefused(reason))
                else:
                    fut.set_result(None)
        # Waits end in about the order of their deadlines: the released ones are forgotten now,
        # not at the next sweep (up to SWEEP_INTERVAL later), which kept thousands of futures alive.
        dl = self._deadlines
        while dl and dl[0][2].done():
            heapq.heappop(dl)

