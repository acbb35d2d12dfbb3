"""HTTP routes of the reference coordinator, app construction from config, and ``serve``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web

from coordinator_plugins.error_handling.config import Rule, check_table, number, suggest, text
from coordinator_plugins.plugins import load_plugins
from coordinator_plugins.reference.coordinator import Coordinator, CoordinatorSettings

logger = logging.getLogger(__name__)

COORDINATOR_KEY = web.AppKey("coordinator", Coordinator)
PLUGINS_KEY = web.AppKey("plugins", dict)

# What each [coordinator] key accepts, checked by the same rules as the plugin's own table.
_SETTING_RULES: dict[str, Rule] = {
    key: meta["rule"]
    for key, meta in {
        "host": text("a host name or IP address", nonempty=True),
        "port": number(0, 65535, integer=True),
        "database": text('a DuckDB file path or ":memory:"', nonempty=True),
        "heartbeat_interval": number(0.05, 3600),
        "heartbeat_timeout": number(0.1, 86400),
        "scheduler_interval": number(0.01, 3600),
        "max_concurrency": number(0, 1_000_000, integer=True),
        "watchdog_repeat": number(0.1, 86400),
        "workers": number(0, 1000, integer=True),
        "worker_max_tasks": number(1, 1000, integer=True),
    }.items()
}
_TABLES = ("coordinator", "plugins")


def settings_from_config(config: Mapping[str, Any]) -> CoordinatorSettings:
    """The ``[coordinator]`` table, checked: one ValueError listing every problem, a line each,
    naming the key, what it accepts and what it got (with a suggestion for a misspelt key)."""
    problems = [
        f"{key}: unknown config table; accepted: {', '.join(_TABLES)}{suggest(str(key), _TABLES)}"
        for key in config
        if key not in _TABLES
    ]
    table = config.get("coordinator", {})
    values: dict[str, Any] = {}
    if not isinstance(table, Mapping):
        problems.append(f"coordinator: expected a table, got {table!r}")
    else:
        values, bad = check_table("coordinator", table, _SETTING_RULES)
        problems += bad
    if not problems:
        settings = CoordinatorSettings(**values)
        if settings.heartbeat_timeout <= settings.heartbeat_interval:
            problems.append(
                f"coordinator.heartbeat_timeout: must be greater than heartbeat_interval "
                f"({settings.heartbeat_interval:g}), got {settings.heartbeat_timeout:g}"
            )
    if problems:
        raise ValueError("\n".join(problems))
    return settings


async def _json(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text='{"error": "malformed JSON body", "code": "malformed_json"}', content_type="application/json"
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text='{"error": "expected a JSON object", "code": "invalid_body"}', content_type="application/json"
        )
    return body


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=web.json_response({"error": message, "code": "invalid_field"}).text, content_type="application/json"
    )


def _coord(request: web.Request) -> Coordinator:
    return request.app[COORDINATOR_KEY]


async def register(request: web.Request) -> web.Response:
    body = await _json(request)
    worker_id = body.get("worker_id")
    if not isinstance(worker_id, str) or not worker_id or len(worker_id) > 200:
        raise _bad("worker_id: expected a non-empty string")
    max_tasks = body.get("max_tasks", 1)
    if not isinstance(max_tasks, int) or isinstance(max_tasks, bool) or not 1 <= max_tasks <= 1000:
        raise _bad("max_tasks: expected an integer from 1 to 1000")
    pid = body.get("pid") if isinstance(body.get("pid"), int) else None
    coord = _coord(request)
    w = coord.register_worker(worker_id, pid, max_tasks, body.get("capabilities") or {})
    return web.json_response(
        {
            "worker_id": w.worker_id,
            "incarnation": w.incarnation,
            "heartbeat_interval": coord.settings.heartbeat_interval,
        }
    )


async def heartbeat(request: web.Request) -> web.Response:
    if not _coord(request).heartbeat(request.match_info["worker_id"]):
        raise web.HTTPGone(
            text='{"error": "unknown or lost worker: register again", "code": "reregister"}',
            content_type="application/json",
        )
    return web.json_response({"ok": True})


async def poll(request: web.Request) -> web.Response:
    coord = _coord(request)
    worker = coord.workers.get(request.match_info["worker_id"])
    if worker is None or worker.status != "active":
        raise web.HTTPGone(
            text='{"error": "unknown or lost worker", "code": "reregister"}', content_type="application/json"
        )
    body = await _json(request)
    wait = body.get("wait", 0)
    wait = min(float(wait), 5.0) if isinstance(wait, int | float) and not isinstance(wait, bool) and wait > 0 else 0
    if not worker.inbox and wait:
        try:
            async with asyncio.timeout(wait):
                await worker.wake.wait()
        except TimeoutError:
            pass
    return web.json_response({"tasks": coord.take_assignments(worker)})


async def submit_task(request: web.Request) -> web.Response:
    body = await _json(request)
    spec = body.get("spec", body)
    if not isinstance(spec, dict) or spec.get("kind", "sim") not in ("sim", "command"):
        raise _bad("spec.kind: expected sim or command")
    task = _coord(request).submit(spec, body.get("task_id") if isinstance(body.get("task_id"), str) else None)
    return web.json_response({"task_id": task.task_id, "status": task.status}, status=201)


async def get_task(request: web.Request) -> web.Response:
    task = _coord(request).tasks.get(request.match_info["task_id"])
    if task is None:
        raise web.HTTPNotFound(text='{"error": "unknown task", "code": "not_found"}', content_type="application/json")
    return web.json_response(task.to_dict())


async def task_result(request: web.Request) -> web.Response:
    body = await _json(request)
    worker_id, attempt = body.get("worker_id"), body.get("attempt")
    if not isinstance(worker_id, str) or not isinstance(attempt, int):
        raise _bad("worker_id and attempt are required")
    accepted = _coord(request).accept_result(request.match_info["task_id"], worker_id, attempt, body)
    if not accepted:
        raise web.HTTPConflict(
            text='{"error": "stale or unknown assignment", "code": "stale_assignment"}', content_type="application/json"
        )
    return web.json_response({"accepted": True})


async def status(request: web.Request) -> web.Response:
    coord = _coord(request)
    health = await coord.health()
    health["workers_detail"] = [w.to_dict() for w in coord.workers.values()]
    return web.json_response(health)


def build_app(config: Mapping[str, Any] | None = None, coordinator: Coordinator | None = None) -> web.Application:
    """The reference coordinator's app with the plugins its config enables (validated first)."""
    config = config or {}
    settings = settings_from_config(config)
    coord = coordinator or Coordinator(settings)
    app = web.Application()
    app[COORDINATOR_KEY] = coord
    coord.app = app  # type: ignore[attr-defined]  # seed-compatible: plugins find the app here
    app.router.add_post("/api/workers/register", register)
    app.router.add_post("/api/workers/{worker_id}/heartbeat", heartbeat)
    app.router.add_post("/api/workers/{worker_id}/poll", poll)
    app.router.add_post("/api/tasks", submit_task)
    app.router.add_get("/api/tasks/{task_id}", get_task)
    app.router.add_post("/api/tasks/{task_id}/result", task_result)
    app.router.add_get("/api/status", status)

    app[PLUGINS_KEY] = load_plugins(app, coord, config)

    # Registered after the plugins, so that on shutdown the coordinator stops (and stops
    # reporting errors) before the plugins close.
    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        yield
        await coord.stop()

    app.cleanup_ctx.append(lifetime)

    async def on_startup(app: web.Application) -> None:
        await coord.start(coord.url or f"http://{settings.host}:{settings.port}")

    app.on_startup.append(on_startup)
    return app


async def serve(
    config: Mapping[str, Any], ready: asyncio.Event | None = None, stop: asyncio.Event | None = None
) -> None:
    """Run the coordinator until ``stop`` is set (or forever). Port 0 picks a free port."""
    app = build_app(config)
    coord = app[COORDINATOR_KEY]
    settings = coord.settings
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
