"""``serve``: the reference coordinator on a TCP port."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from coordinator_plugins.reference.app import COORDINATOR_KEY, SECURITY_KEY, build_app
from coordinator_plugins.reference.security import check_listen

logger = logging.getLogger(__name__)


async def serve(
    config: Mapping[str, Any], ready: asyncio.Event | None = None, stop: asyncio.Event | None = None
) -> None:
    """Run the coordinator until ``stop`` is set (or forever). Port 0 picks a free port."""
    app = build_app(config)
    coord = app[COORDINATOR_KEY]
    settings = coord.settings
    check_listen(settings.host, app[SECURITY_KEY])  # protected mode, before anything binds
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
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
