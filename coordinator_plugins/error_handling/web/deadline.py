"""Route deadlines that cost almost nothing per request.

``asyncio.timeout`` arms a timer per request (a ``TimerHandle`` pushed on the loop's heap, then
cancelled and left there until it is popped): about a tenth of the loop's time per POST /errors
under load. Every request of a route has the same deadline, so the requests in flight expire in
the order they started: one queue per route, and one timer that checks its head every ``tick``
seconds, is enough. A request past its deadline is cancelled as ``asyncio.timeout`` would
(at most ``tick`` later) and answers a JSON 503 ``store_busy`` with Retry-After.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from aiohttp import web

from coordinator_plugins.httpio import ApiError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TICK = 0.25  # s between two checks of a route's oldest request (a deadline fires up to this late)


def busy(seconds: float, may_be_stored: bool = False) -> ApiError:
    """``may_be_stored``: whether what the request asked may still be written (a route that
    writes, cancelled after it queued its write), as every 503 says."""
    return ApiError(
        503, f"the error store did not answer within {seconds:g} s; retry later", "store_busy",
        headers={"Retry-After": "5"}, extra={"may_be_stored": may_be_stored},
    )


class _Entry:
    __slots__ = ("at", "cancelled", "cancelling", "task")

    def __init__(self, at: float, task: asyncio.Task[object]) -> None:
        self.at = at
        # None once the request is done: the queue must not keep a finished request's task (and
        # its request and response) alive until the next check
        self.task: asyncio.Task[object] | None = task
        self.cancelling = task.cancelling()  # the cancellations from elsewhere before it entered
        self.cancelled = False  # by its deadline, and not uncancelled yet


class Deadlines:
    """The requests in flight on routes sharing one deadline of ``seconds``, oldest first."""

    def __init__(self, seconds: float, tick: float = TICK, writes: bool = False) -> None:
        self.seconds = seconds
        self.writes = writes  # its routes write: a request cut off may have queued its write
        self.tick = min(tick, seconds / 4)
        self._queue: deque[_Entry] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.expired = 0  # requests answered 503 by their deadline

    @property
    def idle(self) -> bool:
        """No request is timed and no check is scheduled (every request left)."""
        return self._timer is None and not self._queue

    def enter(self, task: asyncio.Task[object]) -> _Entry:
        entry = _Entry(time.monotonic() + self.seconds, task)
        self._queue.append(entry)
        if self._timer is None:
            self._loop = task.get_loop()
            self._timer = self._loop.call_later(self.tick, self._check)
        return entry

    def _check(self) -> None:
        """Cancel the requests past their deadline; forget the finished ones at the head."""
        self._timer = None
        q = self._queue
        now = time.monotonic()
        while q and (q[0].task is None or q[0].at <= now):
            entry = q.popleft()
            if entry.task is not None:
                entry.cancelled = True
                self.expired += 1
                entry.task.cancel()
        loop = self._loop
        if q and loop is not None and not loop.is_closed():
            self._timer = loop.call_later(self.tick, self._check)

    @staticmethod
    def owns(entry: _Entry) -> bool:
        """In an ``except CancelledError`` (before :meth:`leave`): whether this deadline, and
        nobody else, cancelled the request. The cancellation is then taken back: the caller
        answers :func:`busy` instead of raising it."""
        if not entry.cancelled or entry.task is None:
            return False
        entry.cancelled = False
        # ours only when no one else cancelled the task as well (as asyncio.timeout)
        return entry.task.uncancel() <= entry.cancelling

    @staticmethod
    def leave(entry: _Entry) -> None:
        """In a ``finally``: the request is done, however it ended."""
        task, entry.task = entry.task, None
        if entry.cancelled and task is not None:  # cancelled, but the handler ended otherwise
            task.uncancel()

    def wrap(self, handler: Handler) -> Handler:
        """``handler`` under this deadline: when the store cannot answer in time (a flush waiting
        for a writer that is behind, a reader thread busy), a JSON 503 with Retry-After, never a
        hang. (The plugin's own routes do not use it: its middleware applies their deadline
        itself, one coroutine fewer per request; see ``plugin._middleware``.)"""
        seconds = self.seconds

        async def timed(request: web.Request) -> web.StreamResponse:
            task = asyncio.current_task()
            assert task is not None
            entry = self.enter(task)
            try:
                return await handler(request)
            except asyncio.CancelledError:
                if self.owns(entry):
                    raise busy(seconds, self.writes) from None
                raise
            except TimeoutError:  # a wait inside the handler gave up: the same answer
                raise busy(seconds, self.writes) from None
            finally:
                self.leave(entry)

        return timed
