"""Starts, kills and restarts local worker processes for the coordinator.

A worker gets the coordinator's token in its environment (``COORDINATOR_PLUGINS_API_TOKEN``),
never on its command line, which every local user can read in ``/proc/<pid>/cmdline``. At most
``limit`` of them run at once (``[coordinator] max_local_workers``): a start past it is refused."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any

from coordinator_plugins.httpio import TOKEN_ENV

logger = logging.getLogger(__name__)


class LauncherFull(RuntimeError):
    """A start refused: ``limit`` worker processes run already."""


class WorkerLauncher:
    """Owns local worker OS processes, by worker id."""

    def __init__(
        self,
        url: str = "",
        python: str = sys.executable,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        token: str = "",
        limit: int = 1000,
    ) -> None:
        self.url = url
        self.limit = limit
        self.token = token
        self.python = python
        self.extra_args = list(extra_args or [])
        self.env = env
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.args: dict[str, list[str]] = {}  # each worker's own arguments, reused by restarts
        self.starts = 0
        self.closed = False

    def owns(self, worker_id: str) -> bool:
        return worker_id in self.procs

    def pid(self, worker_id: str) -> int | None:
        proc = self.procs.get(worker_id)
        return proc.pid if proc is not None else None

    def running(self, worker_id: str) -> bool:
        proc = self.procs.get(worker_id)
        return proc is not None and proc.returncode is None

    def running_count(self) -> int:
        return sum(1 for p in self.procs.values() if p.returncode is None)

    async def start(self, worker_id: str, args: list[str] | None = None) -> int:
        """Start a worker process; ``args`` default to the ones it was last started with."""
        if self.closed:
            raise RuntimeError("launcher is shut down")
        if not self.url:
            raise RuntimeError("launcher has no coordinator url yet")
        if self.running(worker_id):
            raise RuntimeError(f"worker {worker_id} is already running")
        if self.running_count() >= self.limit:
            raise LauncherFull(
                f"worker {worker_id} not started: {self.limit} worker processes run here already "
                "([coordinator] max_local_workers)"
            )
        args = self.args.get(worker_id, []) if args is None else list(args)
        self.args[worker_id] = args
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.pop(TOKEN_ENV, None)
        if self.token:
            env[TOKEN_ENV] = self.token
        cmd = [
            self.python,
            "-m",
            "coordinator_plugins",
            "worker",
            "--url",
            self.url,
            "--worker-id",
            worker_id,
            "--parent-pid",
            str(os.getpid()),
            *self.extra_args,
            *args,
        ]
        # Its own session: a Ctrl-C in the terminal reaches the coordinator, which stops its workers
        # itself once their tasks are handled, instead of every worker dying mid-task at once.
        # A worker whose coordinator is gone exits by itself (--parent-pid).
        proc = await asyncio.create_subprocess_exec(
            *cmd, env=env, stdin=asyncio.subprocess.DEVNULL, start_new_session=True
        )
        self.procs[worker_id] = proc
        self.starts += 1
        logger.info("launched worker %s (pid %d)", worker_id, proc.pid)
        return proc.pid

    async def kill(self, worker_id: str) -> bool:
        """SIGKILL, as a crash would; returns False when there is no such process."""
        proc = self.procs.get(worker_id)
        if proc is None or proc.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
        return True

    async def stop(self, worker_id: str, grace: float = 3.0) -> None:
        proc = self.procs.get(worker_id)
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            async with asyncio.timeout(grace):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def signal(self, worker_id: str, sig: int) -> bool:
        proc = self.procs.get(worker_id)
        if proc is None or proc.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
            return True
        return False

    async def restart(self, worker_id: str) -> int:
        await self.stop(worker_id, grace=1.0)
        return await self.start(worker_id)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(w, grace=2.0) for w in list(self.procs)), return_exceptions=True)

    def status(self) -> dict[str, Any]:
        return {w: {"pid": p.pid, "returncode": p.returncode} for w, p in self.procs.items()}
