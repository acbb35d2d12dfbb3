"""The worker process: registers, heartbeats, pulls tasks, runs them and reports results.

A task is a small test job: ``{"kind": "sim", "duration": s, "outcome": "pass"|"fail"|"error"|"hang"}``
or ``{"kind": "command", "argv": [...], "timeout": s}``; a command's argv is executed as it is,
never through a shell.

With several coordinator URLs (``--url`` repeated, a fleet sharing one PostgreSQL database) the
worker talks to the first; when that one stops answering for ``failover_after`` seconds (refused
connections or timeouts, not HTTP errors) it abandons the tasks it was running there (the fleet
member that takes over the dead coordinator's tasks runs them again) and registers with the next
URL, round-robin.

With a token (``--token`` or the environment variable ``COORDINATOR_PLUGINS_API_TOKEN``) every
request carries ``Authorization: Bearer <token>``; a coordinator that refuses it (401) ends the
worker with exit status 2, since retrying cannot help.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
from typing import Any

import aiohttp

from coordinator_plugins.httpio import auth_headers

logger = logging.getLogger(__name__)
MAX_ERROR = 2000  # characters of an error message sent with a result
# A directory of worker ids whose local state is wedged (the demo's ``rehang`` fault): a worker
# whose id is there freezes itself shortly after it registers, every time it is started under
# that id; a replacement under a new id is not affected.
WEDGE_ENV = "COORDINATOR_PLUGINS_WEDGE_DIR"
WEDGE_AFTER = 0.6  # seconds after registering: long enough to be seen serving, then it hangs


class Worker:
    def __init__(
        self,
        url: str | list[str],
        worker_id: str | None = None,
        max_tasks: int = 1,
        parent_pid: int | None = None,
        orphan_timeout: float = 20.0,
        token: str = "",
        failover_after: float = 3.0,
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("url: at least one coordinator URL is needed")
        self.urls = [u.rstrip("/") for u in urls]
        self.url_index = 0
        self.failover_after = failover_after
        self.failovers = 0
        self._unreachable_since: float | None = None
        self.token = token
        self.refused = False  # the coordinator answered 401: wrong or missing token
        self.worker_id = worker_id or f"w-{uuid.uuid4().hex[:8]}"
        self.max_tasks = max_tasks  # as many as the coordinator it works for gives it
        self.wanted_tasks = max_tasks
        self.parent_pid = parent_pid
        self.orphan_timeout = orphan_timeout
        self.heartbeat_interval = 1.0
        self.running: dict[str, asyncio.Task[None]] = {}
        self.stop = asyncio.Event()
        self.last_contact = time.monotonic()
        self.session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        """The coordinator this worker works for now."""
        return self.urls[self.url_index]

    async def _post(self, path: str, body: dict[str, Any], timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
        assert self.session is not None
        url = self.url
        try:
            async with self.session.post(url + path, json=body, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                status = resp.status
                data = await resp.json(content_type=None) if resp.content_length != 0 else {}
        except (aiohttp.ClientConnectionError, TimeoutError):
            if url == self.url and self._unreachable_since is None:
                self._unreachable_since = time.monotonic()
            raise
        if url == self.url:
            self._unreachable_since = None
            self.last_contact = time.monotonic()
        if status == 401 and not self.refused:
            self.refused = True
            logger.error(
                "worker %s: the coordinator refused its token (401 on %s); pass --token or set "
                "COORDINATOR_PLUGINS_API_TOKEN to the coordinator's api_token",
                self.worker_id,
                path,
            )
            self.stop.set()
        return status, data or {}

    async def register(self) -> None:
        delay = 0.1
        while not self.stop.is_set():
            try:
                status, data = await self._post(
                    "/api/workers/register",
                    {
                        "worker_id": self.worker_id,
                        "pid": os.getpid(),
                        "max_tasks": self.wanted_tasks,
                    },
                )
                if status == 200:
                    self.heartbeat_interval = float(data.get("heartbeat_interval", 1.0))
                    granted = data.get("max_tasks")
                    self.max_tasks = self.wanted_tasks
                    if isinstance(granted, int) and 1 <= granted < self.wanted_tasks:
                        logger.warning("worker %s: the coordinator gives it at most %d task(s) at once, not %d "
                                       "([coordinator] worker_max_tasks)", self.worker_id, granted, self.wanted_tasks)
                        self.max_tasks = granted
                    logger.info("worker %s registered", self.worker_id)
                    return
                if status in (400, 421):  # this registration can never succeed (421: a Host it refuses)
                    logger.error("worker %s: the coordinator refused it: %s", self.worker_id, data.get("error"))
                    self.refused = True
                    self.stop.set()
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                logger.debug("register failed: %r", exc)
                if self._gone():
                    delay = 0.1
                    continue
            self._check_orphan()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _gone(self) -> bool:
        """Move to the next coordinator when this one has not answered for ``failover_after`` s."""
        since = self._unreachable_since
        if len(self.urls) < 2 or since is None or time.monotonic() - since < self.failover_after:
            return False
        old = self.url
        self.url_index = (self.url_index + 1) % len(self.urls)
        self._unreachable_since = None
        self.failovers += 1
        abandoned = list(self.running)
        self._abandon_all()
        logger.warning(
            "worker %s: coordinator %s is gone; moving to %s (abandoned %d task(s), which the fleet runs again)",
            self.worker_id, old, self.url, len(abandoned),
        )
        return True

    def _check_orphan(self) -> None:
        if self.parent_pid and os.getppid() != self.parent_pid:
            logger.warning("worker %s: parent %d is gone, exiting", self.worker_id, self.parent_pid)
            self.stop.set()
        if time.monotonic() - self.last_contact > self.orphan_timeout:
            logger.warning("worker %s: coordinator unreachable for %.0fs, exiting", self.worker_id, self.orphan_timeout)
            self.stop.set()

    async def heartbeat_loop(self) -> None:
        while not self.stop.is_set():
            try:
                status, _ = await self._post(
                    f"/api/workers/{self.worker_id}/heartbeat", {"running": list(self.running)}, timeout=5
                )
                if status in (404, 410):  # marked lost or forgotten: start a new incarnation
                    self._abandon_all()
                    await self.register()
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                logger.debug("heartbeat failed: %r", exc)
                if self._gone():
                    await self.register()
                    continue
            self._check_orphan()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat_interval):
                    await self.stop.wait()

    def _abandon_all(self) -> None:
        for t in self.running.values():
            t.cancel()
        self.running.clear()

    async def poll_loop(self) -> None:
        while not self.stop.is_set():
            if len(self.running) >= self.max_tasks:
                await asyncio.sleep(0.05)
                continue
            try:
                status, data = await self._post(f"/api/workers/{self.worker_id}/poll", {"wait": 1.0}, timeout=5)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                logger.debug("poll failed: %r", exc)
                self._gone()  # the heartbeat loop then registers with the next coordinator (404 there)
                self._check_orphan()
                await asyncio.sleep(0.2)
                continue
            if status in (404, 410):
                await asyncio.sleep(0.2)
                continue
            for task in data.get("tasks", []):
                tid = task["task_id"]
                self.running[tid] = asyncio.create_task(self.run_task(task))

    async def run_task(self, task: dict[str, Any]) -> None:
        tid, attempt, spec = task["task_id"], task["attempt"], task.get("spec", {})
        body: dict[str, Any] = {"worker_id": self.worker_id, "attempt": attempt}
        try:
            body.update(await execute(spec))
        except asyncio.CancelledError:
            self.running.pop(tid, None)
            raise
        except Exception as exc:
            error = (str(exc) or type(exc).__name__)[:MAX_ERROR]
            body.update(status="error", error=error, exception_type=type(exc).__name__[:200])
        for delay in (0.1, 0.3, 1.0, 2.0, 4.0):
            try:
                await self._post(f"/api/tasks/{tid}/result", body)
                break
            except (aiohttp.ClientError, TimeoutError, ValueError):
                await asyncio.sleep(delay)
        self.running.pop(tid, None)

    async def run(self) -> None:
        self.session = aiohttp.ClientSession(headers=auth_headers(self.token))
        try:
            await self.register()
            loops = [asyncio.create_task(self.heartbeat_loop()), asyncio.create_task(self.poll_loop())]
            if self._wedged():
                loops.append(asyncio.create_task(self._wedge()))
            await self.stop.wait()
            for t in loops:
                t.cancel()
            self._abandon_all()
            await asyncio.gather(*loops, return_exceptions=True)
        finally:
            await self.session.close()

    def _wedged(self) -> bool:
        wedge = os.environ.get(WEDGE_ENV)
        return bool(wedge) and os.path.exists(os.path.join(str(wedge), self.worker_id))

    async def _wedge(self) -> None:
        """Freeze this process (SIGSTOP): a real hang, as the wedged state it started with causes."""
        await asyncio.sleep(WEDGE_AFTER)
        logger.warning("worker %s: its local state is wedged (%s); hanging", self.worker_id, WEDGE_ENV)
        os.kill(os.getpid(), signal.SIGSTOP)


async def execute(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one task spec; return the result fields (status completed with an outcome, or error)."""
    kind = spec.get("kind", "sim")
    if kind == "sim":
        outcome = spec.get("outcome", "pass")
        if outcome == "hang":
            await asyncio.Event().wait()
        await asyncio.sleep(float(spec.get("duration", 0.05)))
        if outcome == "error":
            raise RuntimeError(spec.get("message", "simulated infrastructure error"))
        return {"status": "completed", "outcome": outcome}
    if kind == "command":
        argv = [str(a) for a in spec.get("argv", [])]
        if not argv:
            raise ValueError("command task without argv")
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        try:
            async with asyncio.timeout(float(spec.get("timeout", 60))):
                out, _ = await proc.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        return {
            "status": "completed",
            "outcome": "pass" if proc.returncode == 0 else "fail",
            "returncode": proc.returncode,
            "output": out.decode(errors="replace")[-2000:],
        }
    raise ValueError(f"unknown task kind {kind!r}")


def main(
    url: str | list[str],
    worker_id: str | None,
    max_tasks: int,
    parent_pid: int | None,
    token: str = "",
    failover_after: float = 3.0,
) -> int:
    """Run a worker until it is stopped; 0, or 2 when the coordinator refused its token."""

    async def _main() -> Worker:
        worker = Worker(url, worker_id, max_tasks, parent_pid, token=token, failover_after=failover_after)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop.set)
        await worker.run()
        return worker

    worker = asyncio.run(_main())
    return 2 if worker.refused else 0
