"""A coordinator shaped like the seed framework's current one (issue 28.3), written for the tests:
the plugin is installed in ``__init__``, and ``start()`` serves the HTTP API from a thread of its
own, whose event loop builds the aiohttp app in a local variable and hands it to a runner.

``wiring`` says which line the integrator added where the app is created: ``None`` (none, as the
seed ships), ``"self.app"`` (``self.app = app``) or ``"attach"`` (``integration.attach(app)``)."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import duckdb
from aiohttp import web

from coordinator_plugins.error_handling import install_enhanced_error_handling

# the seed's seven error-handling routes, all GET-able or POST-able without a body
SEED_ROUTES = [
    ("GET", "/api/errors"),
    ("GET", "/api/errors/nope"),
    ("POST", "/api/errors/nope/resolve"),
    ("GET", "/api/recovery/metrics"),
    ("GET", "/api/recovery/history"),
    ("POST", "/api/recovery/reset"),
    ("GET", "/api/diagnostics"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SeedLikeCoordinator:
    def __init__(self, plugin_config: dict[str, Any], wiring: str | None, db_path: str | None = None) -> None:
        self.host, self.port = "127.0.0.1", free_port()
        self.wiring = wiring
        # the seed's dict-based state, which the plugin's seed adapter acts on
        self.workers: dict[str, Any] = {}
        self.tasks: dict[str, Any] = {}
        self.running_tasks: dict[str, str] = {}
        self.pending_tasks: set[str] = set()
        self.failed_tasks: set[str] = set()
        self.worker_connections: dict[str, Any] = {}
        self.db_path = db_path
        self.enhanced_error_handling = install_enhanced_error_handling(self, plugin_config)
        # the seed's subclass opens its database after the base class installed the plugin
        self.db = duckdb.connect(db_path) if db_path else None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.served = threading.Event()
        self.failure: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _serve(self) -> None:
        app = web.Application()  # a local variable, as in the seed
        app.router.add_get("/status", self._status)
        if self.wiring == "self.app":
            self.app = app
        elif self.wiring == "attach":
            self.enhanced_error_handling.attach(app)
        runner = web.AppRunner(app)
        try:
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException as exc:  # the seed logs it and the thread ends
            self.failure = exc
            self.served.set()
            await runner.cleanup()
            return
        self._stop = asyncio.Event()
        self.served.set()
        await self._stop.wait()
        await runner.cleanup()

    def start(self) -> None:
        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._serve())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert self.served.wait(20), "the API thread did not come up"

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(20)
            assert not self._thread.is_alive()
        if self.db is not None:
            self.db.close()
