"""Waiting for durability, as both stores do it: futures waiting for a write number, released in
order as commits land (:class:`Waiters`), and a wait under a timeout (:func:`wait_within`)."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable

from coordinator_plugins.error_handling.storage.base import WriteRefused


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


class Waiters:
    """Futures waiting for a write number (seq), lowest first. Used on the event loop only."""

    __slots__ = ("_heap",)

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, seq: int, fut: asyncio.Future[None]) -> None:
        heapq.heappush(self._heap, (seq, id(fut), fut))

    def release(self, upto: int, refused: Callable[[int], str | None] | None = None) -> None:
        """Complete the waits for writes numbered up to ``upto``; one whose write the database
        refused (``refused(seq)`` gives why) fails with WriteRefused, and no other."""
        heap = self._heap
        while heap and heap[0][0] <= upto:
            seq, _, fut = heapq.heappop(heap)
            if fut.done():
                continue
            reason = refused(seq) if refused is not None else None
            if reason is not None:
                fut.set_exception(WriteRefused(reason))
            else:
                fut.set_result(None)

    def fail(self, exc: Callable[[], BaseException]) -> None:
        """Fail every wait still pending with ``exc()`` (the store closed first), and forget them."""
        for _, _, fut in self._heap:
            if not fut.done():
                fut.set_exception(exc())
        self._heap.clear()
