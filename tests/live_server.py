"""A real reference coordinator (the plugin enabled) on an ephemeral port, served from a
background thread, for clients that block: hypothesis fuzzing, a schemathesis subprocess."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web

from coordinator_plugins.reference import build_app


class ServerThread:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.runner: web.AppRunner | None = None
        self.app: web.Application | None = None
        self.failure: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as exc:  # reported by start()
            self.failure = exc
            self.ready.set()
            return
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.app = build_app(self.config)
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def start(self) -> ServerThread:
        self.thread.start()
        assert self.ready.wait(60), "server did not start within 60 s"
        if self.failure is not None:
            raise self.failure
        return self

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
