"""The threads that run synchronous hooks: a few daemon threads of the plugin's own.

``asyncio.to_thread`` runs a call in the loop's default executor, whose threads the interpreter
joins at exit (and ``asyncio.run`` waits for them): one sync hook stuck in ``time.sleep(3600)``
kept a stopped server from ever exiting. These threads are daemon threads, so a hung hook holds
one of them, never the process. There are at most ``size`` of them; a call that finds them all
busy waits in a queue of at most ``backlog`` calls, and past that it is not run: counted in
``overflow`` and logged once (a hook that hangs on every call fills them all, and the rest of
the hooks' calls then wait for nothing).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

SYNC_HOOK_THREADS = 4  # daemon threads that run sync hooks
SYNC_HOOK_BACKLOG = 1000  # calls waiting for one of them; past it a call is dropped and counted
IDLE_EXIT = 60.0  # s a thread waits for work before it ends (started again when needed)


class HookOverflow(RuntimeError):
    """Every hook thread is busy and the backlog is full: the call was not run."""


class _Call:
    __slots__ = ("abandoned", "args", "fn", "future", "loop")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], loop: asyncio.AbstractEventLoop,
                 future: asyncio.Future[Any]) -> None:
        self.fn, self.args, self.loop, self.future = fn, args, loop, future
        self.abandoned = False  # its caller stopped waiting (hook_timeout): not started if still queued


class HookThreads:
    """At most ``size`` daemon threads, started when first needed, and a bounded backlog."""

    def __init__(self, size: int = SYNC_HOOK_THREADS, backlog: int = SYNC_HOOK_BACKLOG) -> None:
        self.size = size
        self.backlog = backlog
        self.overflow = 0  # calls not run: every thread busy and the backlog full
        self._queue: deque[_Call] = deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._said = False
        self._closing = False

    @property
    def threads(self) -> int:
        """Hook threads alive now (at most ``size``)."""
        with self._cond:
            return len(self._threads)

    def submit(self, fn: Callable[..., Any], *args: Any) -> tuple[asyncio.Future[Any], Callable[[], None]]:
        """Run ``fn(*args)`` on a hook thread: (a future of its result on the running loop, a call
        that abandons it). HookOverflow, counted and logged once, when it cannot be queued."""
        loop = asyncio.get_running_loop()
        call = _Call(fn, args, loop, loop.create_future())
        with self._cond:
            if len(self._queue) >= self.backlog:
                self.overflow += 1
                if not self._said:
                    self._said = True
                    logger.error(
                        "error hooks: all %d hook threads are busy and %d calls wait; further sync hook calls "
                        "are dropped (counted in hook_overflow). A sync hook blocks: make it async, or return "
                        "quickly", self.size, self.backlog)
                raise HookOverflow("every hook thread is busy")
            self._queue.append(call)
            self._closing = False  # (a registry used again after a stop)
            if self._idle == 0 and len(self._threads) < self.size:
                t = threading.Thread(target=self._work, name=f"error-hook-{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()
            else:
                self._cond.notify()

        def abandon() -> None:
            call.abandoned = True

        return call.future, abandon

    def close(self) -> None:
        """At shutdown: each idle thread ends now, a busy one once its call returns."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                while not self._queue:
                    if self._closing:
                        self._threads.remove(me)
                        return
                    self._idle += 1
                    woken = self._cond.wait(IDLE_EXIT)
                    self._idle -= 1
                    if not woken and not self._queue:  # idle this long: a thread fewer
                        self._threads.remove(me)
                        return
                call = self._queue.popleft()
            if call.abandoned:
                continue
            try:
                result, error = call.fn(*call.args), None
            except BaseException as exc:  # handed to the waiting caller, which logs it
                result, error = None, exc
            try:
                call.loop.call_soon_threadsafe(_settle, call.future, result, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
