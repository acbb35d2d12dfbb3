"""One background psutil sampler, so nothing ever blocks the loop to measure the machine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import psutil

logger = logging.getLogger(__name__)


class ResourceSampler:
    """Samples CPU and memory once per ``interval`` from one task; :meth:`latest` is a cached read."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._proc = psutil.Process()
        self._latest: dict[str, Any] = {
            "cpu_percent": 0.0,
            "memory_percent": 0.0,
            "process_rss_mb": 0.0,
            "process_cpu_percent": 0.0,
            "ts": 0.0,
        }
        self._task: asyncio.Task[None] | None = None
        # The first non-blocking reading per process object is 0.0: prime it now.
        psutil.cpu_percent(None)
        self._proc.cpu_percent(None)
        self.sample()

    def sample(self) -> dict[str, Any]:
        try:
            self._latest = {
                "cpu_percent": float(psutil.cpu_percent(None)),
                "memory_percent": float(psutil.virtual_memory().percent),
                "process_rss_mb": self._proc.memory_info().rss / 1e6,
                "process_cpu_percent": float(self._proc.cpu_percent(None)),
                "ts": time.time(),
            }
        except (psutil.Error, OSError) as exc:
            logger.debug("sampler: %r", exc)
        return self._latest

    def latest(self) -> dict[str, Any]:
        return dict(self._latest)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.sample()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="error-handling-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
