"""``serve``: the reference coordinator on a TCP port, shedding slow and idle clients (SPEC 8).

What aiohttp offers is used as it is: ``keepalive_timeout`` closes a connection that waits longer
than that for the head of its next request, from when it opened or its previous answer was sent
(an idle keep-alive connection, and a header trickled one byte at a time, alike); request bodies
have their own deadline (``body_timeout``). What it does not offer is added here:

- a cap on connections at once (``max_connections``): at the cap, a new connection takes the
  place of the one that has waited longest for a first request (a slow client's), else of the
  one idle the longest; when every connection is busy with a request it is answered 503 and
  closed. So a flood of slow connections cannot starve a health probe;
- the event loop's ``socket.accept() out of system resource`` error, logged by asyncio with a
  traceback on every failed accept (189,055 lines in 35 s once the descriptors ran out), is
  logged at most once per second, with the count of the others and the fix.

A host app served some other way gets the same with ``web.run_app(app, keepalive_timeout=15)``
(or ``web.AppRunner(app, keepalive_timeout=15)``) and, for the cap, :class:`CappedSite`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from coordinator_plugins.httpio import dumps
from coordinator_plugins.reference.app import COORDINATOR_KEY, SECURITY_KEY, build_app
from coordinator_plugins.reference.security import check_listen
from coordinator_plugins.reference.settings import CoordinatorSettings

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 1000
FD_RESERVE = 64  # descriptors kept for databases, worker processes, logs and the loop itself
_ACCEPT_ERROR = "socket.accept() out of system resource"
_BUSY_BODY = dumps({"error": "too many connections; try again shortly", "code": "too_many_connections",
                    "may_be_stored": False})  # the request was never read
_BUSY = (
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    f"Connection: close\r\nContent-Length: {len(_BUSY_BODY)}\r\n\r\n{_BUSY_BODY}"
).encode()


def connection_limit(settings: CoordinatorSettings) -> int:
    """``max_connections``, or by default 1000 and no more than the open-file limit leaves room
    for; a configured value past that limit is kept, with a warning naming the fix."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    room = max(16, soft - FD_RESERVE) if soft != resource.RLIM_INFINITY else DEFAULT_MAX_CONNECTIONS
    if settings.max_connections is None:
        return min(DEFAULT_MAX_CONNECTIONS, room)
    if settings.max_connections > room:
        logger.warning(
            "[coordinator] max_connections = %d, but the open-file limit (%d) leaves room for about %d: "
            "past that, connections fail to be accepted. Raise the limit (ulimit -n) or lower max_connections",
            settings.max_connections, soft, room,
        )
    return settings.max_connections


class _Busy(asyncio.Protocol):
    """A connection over the cap while every other one is busy: a JSON 503, then closed. Closed
    once the client has read it (or after a second): closing at once, with the client's request
    still arriving, would reset the connection and lose the answer."""

    handle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_BUSY)
        if transport.can_write_eof():
            transport.write_eof()
        self.handle = asyncio.get_running_loop().call_later(1.0, transport.close)

    def eof_received(self) -> bool:
        return False  # the client is done: close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handle is not None:
            self.handle.cancel()


class _Handler(web.RequestHandler):
    """aiohttp's request handler, known to its :class:`ConnectionCap` until its connection ends."""

    def __init__(self, cap: ConnectionCap, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.cap = cap
        self.opened = time.monotonic()
        self.evicted = False  # taken over before its connection was made: closed as it is

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.evicted:
            self.force_close()

    def evict(self) -> None:
        self.evicted = True
        if self.transport is not None:
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.cap.live.pop(self, None)
        super().connection_lost(exc)

    def idle(self) -> bool:
        """Waiting for the head of a request (aiohttp's own test of an idle connection)."""
        waiter = getattr(self, "_waiter", None)
        return waiter is not None and not waiter.done()

    def served(self) -> bool:
        """Whether a whole request head has arrived on this connection yet (until then it is
        busy with no request, even before its handler's task first ran)."""
        return bool(getattr(self, "_request_count", 1))


class ConnectionCap:
    """At most ``limit`` connections at once (see the module's docstring)."""

    def __init__(self, limit: int, **handler_kwargs: Any) -> None:
        self.limit = limit
        self.handler_kwargs = handler_kwargs
        self.live: dict[_Handler, None] = {}  # in the order they opened
        self.evictions = 0
        self.refused = 0

    def factory(self, server: web.Server) -> Callable[[], asyncio.BaseProtocol]:
        loop = asyncio.get_running_loop()

        def make() -> asyncio.BaseProtocol:
            if len(self.live) >= self.limit and not self._evict():
                self.refused += 1
                return _Busy()
            handler = _Handler(self, server, loop=loop, **self.handler_kwargs)
            self.live[handler] = None
            return handler

        return make

    def _evict(self) -> bool:
        """Close the connection that has waited longest for a first request, else the one idle the
        longest; False when every connection is busy with a request."""
        now = time.monotonic()
        victim: _Handler | None = None
        for handler in list(self.live):
            if handler.transport is None and now - handler.opened > 10:
                del self.live[handler]  # its connection never came
                return True
            if not handler.served():
                victim = handler
                break
            if handler.idle():
                victim = victim or handler
        if victim is None:
            return False
        del self.live[victim]
        victim.evict()
        self.evictions += 1
        return True


class CappedSite(web.BaseSite):
    """A TCP site whose connections are capped by a :class:`ConnectionCap`."""

    __slots__ = ("_cap", "_host", "_port")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, cap: ConnectionCap, backlog: int = 128) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._cap = host, port, cap

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._cap.factory(server), self._host, self._port,
                                                backlog=self._backlog)


class AcceptErrorLog:
    """The loop's exception handler while ``serve`` runs: an accept that failed for want of file
    descriptors is logged at most once per ``interval`` seconds, without a traceback, with the
    count of the ones not logged; anything else goes to the handler that was there before."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = 1.0) -> None:
        self.loop = loop
        self.interval = interval
        self.previous = loop.get_exception_handler()
        self.last = -math.inf
        self.suppressed = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != _ACCEPT_ERROR:
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return
        more = f" ({self.suppressed} more since the last such line)" if self.suppressed else ""
        self.last, self.suppressed = now, 0
        logger.error(
            "cannot accept a connection: %s%s. Raise the open-file limit (ulimit -n) or lower "
            "[coordinator] max_connections", context.get("exception"), more,
        )

    def __enter__(self) -> AcceptErrorLog:
        self.loop.set_exception_handler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.set_exception_handler(self.previous)


async def serve(
    config: Mapping[str, Any], ready: asyncio.Event | None = None, stop: asyncio.Event | None = None
) -> None:
    """Run the coordinator until ``stop`` is set (or forever). Port 0 picks a free port."""
    app = build_app(config)
    coord = app[COORDINATOR_KEY]
    settings = coord.settings
    check_listen(settings.host, app[SECURITY_KEY])  # protected mode, before anything binds
    handler_kwargs: dict[str, Any] = {"keepalive_timeout": settings.keepalive_timeout}
    runner = web.AppRunner(app, handle_signals=False, **handler_kwargs)
    with AcceptErrorLog(asyncio.get_running_loop()):
        await runner.setup()
        site = CappedSite(runner, settings.host, settings.port, ConnectionCap(connection_limit(settings),
                                                                                **handler_kwargs))
        # Workers need the bound port (0 picks one), so they launch after the site starts.
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else settings.port
        coord.url = f"http://{settings.host}:{port}"
        coord.launcher.url = coord.url
        await coord.launch_workers()
        logger.info("coordinator listening on %s", coord.url)
        print(f"coordinator listening on {coord.url}", flush=True)
        if ready is not None:
            ready.set()
        try:
            await (stop.wait() if stop is not None else asyncio.Event().wait())
        finally:
            await runner.cleanup()
