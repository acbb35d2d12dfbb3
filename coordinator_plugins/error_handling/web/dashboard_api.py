"""The dashboard's routes beyond SPEC section 5: the timeline of this coordinator's errors and
recoveries, one group's occurrences over time (from the database), and the page with its assets.
Mounted by ``api.add_routes``; documented in the OpenAPI document."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from coordinator_plugins.error_handling.recovery.outcome import RECOVERY_OUTCOMES
from coordinator_plugins.error_handling.web.dashboard import ASSETS, asset, render_page
from coordinator_plugins.error_handling.web.port import ErrorsApi
from coordinator_plugins.error_handling.web.timeline import HORIZON, Timeline
from coordinator_plugins.error_handling.web.validate import query_int
from coordinator_plugins.httpio import ApiError, not_found


class PageGate(Protocol):
    """Whether the page may be shown (``api.ErrorRoutes.page_status``: the token, when reads need it)."""

    def page_status(self, request: web.Request) -> int: ...


class DashboardRoutes:
    def __init__(self, integ: ErrorsApi, routes: PageGate, timeline: Timeline) -> None:
        self.integ = integ
        self.routes = routes
        self.timeline = timeline

    async def lifetime(self, app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self.timeline.run(), name="error-handling-dashboard-timeline")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def timeline_route(self, request: web.Request) -> web.Response:
        window = query_int(request, "window", 900, 60, HORIZON)
        return web.json_response(self.timeline.series(window))

    async def occurrences(self, request: web.Request) -> web.Response:
        error_id = request.match_info["error_id"]
        if len(error_id) > 64:
            raise not_found(f"unknown error id {error_id[:64]!r}")
        buckets = query_int(request, "buckets", 60, 1, 500)
        window = query_int(request, "window", 0, 0, 365 * 86_400)
        out = await self.integ.get_occurrence_series(error_id, buckets, float(window) if window else None)
        if out is None:
            raise not_found(f"unknown error id {error_id!r}")
        return web.json_response(out)

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(
            text=render_page(self.integ.config),
            status=self.routes.page_status(request),
            content_type="text/html",
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise ApiError(404, f"no dashboard asset {name[:64]!r}", "not_found")
        return web.Response(
            text=asset(name),
            content_type=ASSETS[name],
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def dashboard_routes(
    app: web.Application, integ: ErrorsApi, routes: PageGate, timeline: Timeline
) -> list[tuple[str, str, Handler]]:
    """The dashboard's routes, for ``add_routes`` to mount; starts the timeline with the app."""
    d = DashboardRoutes(integ, routes, timeline)
    app.cleanup_ctx.append(d.lifetime)
    p = integ.config.api_prefix
    table: list[tuple[str, str, Handler]] = [
        ("GET", f"{p}/timeline", d.timeline_route),
        ("GET", f"{p}/errors/{{error_id}}/occurrences", d.occurrences),
    ]
    if integ.config.dashboard_path:
        table += [
            ("GET", integ.config.dashboard_path, d.page),
            ("GET", f"{integ.config.dashboard_path}/assets/{{name}}", d.asset),
        ]
    return table


def openapi_paths(prefix: str, errors: Callable[..., dict[str, Any]], query: Callable[..., dict[str, Any]],
                  resp: Callable[..., dict[str, Any]], path_id: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI entries of the routes above (merged into the document by ``openapi.py``)."""
    series = {"type": "array", "items": {"type": ["number", "null"]}}
    return {
        f"{prefix}/timeline": {
            "get": {
                "summary": "This coordinator's errors and recoveries over the last window, for the dashboard",
                "description": (
                    "Sampled once a second since the process started (at most the last hour): errors per "
                    "second by type, finished recoveries by outcome, open groups, budget use and recoveries "
                    "in flight per bucket, each finished recovery's time to recovery, and the reasons "
                    "recovery cannot act (warnings)."
                ),
                "parameters": [
                    query("window", {"type": "integer", "minimum": 60, "maximum": HORIZON},
                          "seconds back from now (default 900)")
                ],
                "responses": {
                    "200": resp("the timeline", {
                        "type": "object",
                        "required": ["now", "start", "step_seconds", "buckets", "errors_per_second",
                                     "recoveries", "open_groups", "budget_used", "recovery_points", "totals",
                                     "warnings"],
                        "properties": {
                            "start": {"type": "number", "description": "epoch seconds of the first bucket"},
                            "step_seconds": {"type": "integer"},
                            "errors_per_second": {"type": "object", "additionalProperties": series},
                            "recoveries": {"type": "object",
                                           "properties": {o: series for o in RECOVERY_OUTCOMES}},
                            "open_groups": series,
                            "budget_used": series,
                            "warnings": {"type": "array", "items": {
                                "type": "object", "required": ["level", "code", "text"]}},
                        },
                    }),
                    **errors(400),
                },
            }
        },
        f"{prefix}/errors/{{error_id}}/occurrences": {
            "get": {
                "summary": "One group's stored occurrences per time bucket",
                "description": "From the group's first occurrence (or the last `window` seconds) to now, in "
                "buckets of a round number of seconds aligned to the clock.",
                "parameters": [
                    path_id,
                    query("buckets", {"type": "integer", "minimum": 1, "maximum": 500}, "at most this many (60)"),
                    query("window", {"type": "integer", "minimum": 0, "maximum": 365 * 86_400},
                          "seconds back from now; 0 = the group's whole life (default)"),
                ],
                "responses": {
                    "200": resp("counts", {
                        "type": "object",
                        "required": ["error_id", "start", "end", "step_seconds", "counts", "total"],
                        "properties": {
                            "start": {"type": "string", "format": "date-time"},
                            "end": {"type": "string", "format": "date-time"},
                            "step_seconds": {"type": "number"},
                            "counts": {"type": "array", "items": {"type": "integer"}},
                            "total": {"type": "integer"},
                        },
                    }),
                    **errors(400, 404),
                },
            }
        },
    }
