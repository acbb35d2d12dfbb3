"""Error hooks: callables run for each report whose type, category or family matches their key.

Hooks run off the reporting path: :meth:`HookRegistry.fire` starts them in the background and
returns at once, so a report (and its HTTP answer) never waits for a hook. Sync hooks run on the
plugin's own daemon threads (``hookthreads.py``: at most 4, a bounded backlog, overflow counted
and logged once), async hooks as tasks, all concurrently, each bounded by ``hook_timeout``. A
hook that raises or overruns is logged and counted; it never reaches the caller, never stops the
other hooks, and never keeps the process from exiting.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from coordinator_plugins.error_handling.intake.hookthreads import HookOverflow, HookThreads
from coordinator_plugins.error_handling.model import ErrorCategory, ErrorReport, ErrorType

logger = logging.getLogger(__name__)

Hook = Callable[[ErrorReport], Any] | Callable[[ErrorReport], Awaitable[Any]]
# A hook's key: a string, an ErrorType or ErrorCategory (their values), or several of them.
HookKey = str | ErrorType | ErrorCategory | Iterable[str | ErrorType | ErrorCategory]

# The key "coordinator" also fires for these error types (SPEC section 3).
_COORDINATOR_TYPES = {ErrorType.COORDINATION, ErrorType.SCHEDULING, ErrorType.STATE}
MAX_RUNS = 10_000  # reports whose hooks run at once; past it a report's hooks are skipped and counted


def keys_for(report: ErrorReport) -> list[str]:
    """Every hook key that fires for a report, "*" first."""
    keys = ["*", report.error_type.value, report.category.value, report.category.family]
    if report.error_type in _COORDINATOR_TYPES:
        keys.append("coordinator")
    return list(dict.fromkeys(keys))


class HookRegistry:
    """Hooks by key, with failure and timeout counters."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._hooks: dict[str, list[Hook]] = {}
        self.calls = 0
        self.failures = 0
        self.timeouts = 0
        self._running: set[asyncio.Task[Any]] = set()  # hooks abandoned at their timeout
        self._runs: set[asyncio.Task[Any]] = set()  # reports whose hooks are running (fire)
        self._threads = HookThreads()
        self._skipped = 0
        self._said_skipped = False

    def register(self, key: HookKey, hook: Hook) -> None:
        """Register ``hook`` under ``key``: a string, an ErrorType or ErrorCategory, or a list of them."""
        if not callable(hook):
            raise ValueError(f"hook for {key!r}: expected a callable, got {type(hook).__name__}")
        keys = list(key) if isinstance(key, list | tuple | set | frozenset) else [key]
        names: list[str] = []
        for k in keys:
            name = k.value if isinstance(k, ErrorType | ErrorCategory) else k
            if not isinstance(name, str) or not name:
                raise ValueError(f"hook key: expected a non-empty string, an ErrorType or a list of them, got {k!r}")
            names.append(name)
        if not names:
            raise ValueError("hook key: expected at least one key")
        for name in dict.fromkeys(names):
            self._hooks.setdefault(name, []).append(hook)

    @property
    def active(self) -> bool:
        """Whether any hook is registered (else :meth:`run` has nothing to do)."""
        return bool(self._hooks)

    def matching(self, report: ErrorReport) -> list[Hook]:
        if not self._hooks:
            return []
        found: list[Hook] = []
        for key in keys_for(report):
            found.extend(self._hooks.get(key, ()))
        return found

    @property
    def threads(self) -> int:
        """Threads running or waiting for sync hooks now (at most 4, see hookthreads.py)."""
        return self._threads.threads

    @property
    def overflow(self) -> int:
        """Hook calls not run: every hook thread busy and its backlog full, or too many reports'
        hooks running at once (each logged once)."""
        return self._threads.overflow + self._skipped

    def fire(self, report: ErrorReport) -> None:
        """Start the matching hooks in the background (on the running loop) and return at once."""
        hooks = self.matching(report)
        if not hooks:
            return
        if len(self._runs) >= MAX_RUNS:
            self._skipped += len(hooks)
            if not self._said_skipped:
                self._said_skipped = True
                logger.error("error hooks: the hooks of %d reports are running; the hooks of further reports are "
                             "skipped (counted in hook_overflow). Make slow hooks async, or return quickly",
                             MAX_RUNS)
            return
        task = asyncio.ensure_future(self._run(report, hooks))
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until the hooks started so far have finished or been abandoned (at most
        ``timeout`` seconds; each hook is bounded by ``hook_timeout`` anyway)."""
        if self._runs:
            await asyncio.wait(list(self._runs), timeout=timeout)

    async def run(self, report: ErrorReport) -> None:
        """Run every matching hook; return after all finish or ``timeout`` passes."""
        hooks = self.matching(report)
        if hooks:
            await self._run(report, hooks)

    async def _run(self, report: ErrorReport, hooks: list[Hook]) -> None:
        tasks = [asyncio.ensure_future(self._call(h, report)) for h in hooks]
        self.calls += len(tasks)
        try:
            done, pending = await asyncio.wait(tasks, timeout=self.timeout)
        except asyncio.CancelledError:  # shutdown (drain): the hooks are abandoned with it
            for task in tasks:
                task.cancel()
            raise
        for task in pending:
            self.timeouts += 1
            logger.warning(
                "error hook %s exceeded hook_timeout (%.3fs); abandoned", _name(hooks[tasks.index(task)]), self.timeout
            )
            task.cancel()
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        for task in done:
            exc = task.exception()
            if isinstance(exc, HookOverflow):
                continue  # counted in overflow, logged once
            if exc is not None:
                self.failures += 1
                hook = hooks[tasks.index(task)]
                logger.error("error hook %s failed for %s: %r", _name(hook), report.error_id, exc)

    async def _call(self, hook: Hook, report: ErrorReport) -> None:
        if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(type(hook).__call__):
            await hook(report)
            return
        future, abandon = self._threads.submit(hook, report)
        try:
            result = await future
        except asyncio.CancelledError:
            abandon()  # not started yet: never started; running: its thread is a daemon
            raise
        if inspect.isawaitable(result):
            await result

    async def drain(self, timeout: float = 1.0) -> None:
        """At shutdown: give running hooks up to ``timeout`` seconds, then abandon them. A sync
        hook that does not return holds a daemon thread, which never keeps the process alive."""
        if self._runs:
            await asyncio.wait(list(self._runs), timeout=timeout)
            for task in list(self._runs):
                task.cancel()
                self._running.add(task)
                task.add_done_callback(self._running.discard)
        if self._running:
            await asyncio.wait(list(self._running), timeout=timeout)
        self._threads.close()


def _name(hook: Hook) -> str:
    return getattr(hook, "__qualname__", None) or repr(hook)
