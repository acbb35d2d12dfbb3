"""Mounting an integration on an aiohttp app: its state under ``ERROR_HANDLING_KEY``, the HTTP
routes (``web/``), the plugin's middleware and its lifetime. ``setup`` and
``install_enhanced_error_handling`` (``install.py``) create an integration and attach it here;
``integration.attach(app)`` does it for one created by hand."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from coordinator_plugins.error_handling.web.api import add_routes
from coordinator_plugins.error_handling.web.deadline import Deadlines, busy
from coordinator_plugins.error_handling.web.timeline import Timeline
from coordinator_plugins.guard import BrowserGuard, HostPolicy
from coordinator_plugins.httpio import is_json_error, json_error_from, json_response

if TYPE_CHECKING:
    from coordinator_plugins.error_handling.integration import EnhancedErrorHandlingIntegration

logger = logging.getLogger(__name__)

# the integration on the app (its type named for the type checker only: this module is below it)
ERROR_HANDLING_KEY: web.AppKey[EnhancedErrorHandlingIntegration] = web.AppKey("error_handling")


def _middleware(integ: EnhancedErrorHandlingIntegration, deadline_of: Mapping[web.AbstractRoute, Deadlines]) -> Any:
    """The plugin's one layer around every handler of the app: an error under the API prefix is
    a JSON error, an unhandled exception anywhere is reported (and answered with a JSON 500 that
    names its group), and the plugin's own routes answer under their deadline (``deadline_of``,
    from ``add_routes``): a request past it is cancelled and answers the JSON 503 ``store_busy``.

    The deadline is applied here rather than by a wrapper of each route: under load every layer
    of coroutines around a handler costs the loop about 4% of its requests per second.

    Its own routes are refused to a page in a browser first (``coordinator_plugins.guard``: a
    foreign Host 421, a cross-site Origin 403, a body not sent as JSON 415)."""
    prefix = integ.config.api_prefix
    guard = BrowserGuard(HostPolicy(integ.config.allowed_hosts))

    @web.middleware
    async def capture_errors(request: web.Request, handler: Any) -> web.StreamResponse:
        deadline = deadline_of.get(request.match_info.route)  # None: a route of the host's (or none)
        entry, seconds, writes = None, 0.0, False
        if deadline is not None:
            guard.check(request)
            task = asyncio.current_task()
            assert task is not None
            entry, seconds, writes = deadline.enter(task), deadline.seconds, deadline.writes
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400 and request.path.startswith(prefix) and not is_json_error(exc):
                return json_error_from(exc)  # keeps its headers: Allow on a 405
            raise
        except asyncio.CancelledError:
            if entry is not None and Deadlines.owns(entry):
                raise busy(seconds, writes) from None
            raise
        except Exception as exc:
            if entry is not None and isinstance(exc, TimeoutError):  # a wait inside the handler gave up
                raise busy(seconds, writes) from None
            failed = exc
        finally:
            if entry is not None:
                Deadlines.leave(entry)
        # reported once the request is out of its deadline: a report that takes long must not be
        # cut short into a dropped connection
        return await _unhandled(integ, request, failed)

    capture_errors.json_errors_prefix = prefix  # type: ignore[attr-defined]  # read by hosts (reference.app)
    return capture_errors


async def _unhandled(integ: EnhancedErrorHandlingIntegration, request: web.Request, exc: Exception) -> web.Response:
    """An exception no handler caught: reported as an error of the coordinator, logged, and
    answered with a JSON 500 without a trace (the group's id says where to look)."""
    route = request.match_info.route.resource
    operation = route.canonical if route is not None else request.path
    error_id = None
    if integ.started and not integ.closed:
        try:
            context = {"component": "coordinator", "operation": f"{request.method} {operation}"}
            report = await integ.report_error(exc, context)
            error_id = report.error_id
        except Exception:
            logger.exception("could not report a handler error")
    logger.error("unhandled error in %s %s: %r", request.method, operation, exc)
    return json_response({"error": "internal error", "code": "internal_error", "error_id": error_id}, 500)


def check_app(app: web.Application) -> None:
    """``app`` can take the plugin: an aiohttp app, not started, without error handling yet."""
    if not isinstance(app, web.Application):
        raise ValueError(f"app: expected an aiohttp.web.Application, got {type(app).__name__}")
    if app.frozen:
        raise RuntimeError("error_handling.setup: the app has already started; call setup before it starts")
    if ERROR_HANDLING_KEY in app:
        raise RuntimeError("error_handling.setup: error handling is already set up on this app")


# What to do when an integration has no app: said at install, on the first report that arrives
# unattached, at interpreter exit, and by run_diagnostics() (issue 28.3).
NOT_ATTACHED = (
    "error handling is not attached to an app: no route is mounted, nothing is stored and nothing "
    "recovers in the background. Where the coordinator creates its aiohttp app (the seed coordinator: "
    "`app = web.Application()` in `_api_server_main`), add `self.app = app` right after it, or call "
    "`integration.attach(app)` before `runner.setup()` (docs/migrating.md, step 1)"
)


def attach(integ: EnhancedErrorHandlingIntegration, app: web.Application) -> EnhancedErrorHandlingIntegration:
    """Mount an integration on ``app``: state under ERROR_HANDLING_KEY, routes, middleware, lifetime.

    The part of :func:`setup` that needs the app; ``integration.attach(app)`` calls it. Attaching
    an integration to the app it is attached to returns it (issue 28.4: the natural call after
    ``coordinator.app = app`` already attached it); another app, or another integration on this
    app, is a RuntimeError."""
    if integ.app is app and app.get(ERROR_HANDLING_KEY) is integ:
        return integ
    check_app(app)
    if integ.app is not None:
        raise RuntimeError("error_handling.attach: this integration is already attached to another app "
                           "(an integration serves one app: install another for this one)")
    app[ERROR_HANDLING_KEY] = integ
    # the dashboard's timeline listens to recoveries and samples the counters once a second
    timeline = Timeline(integ.get_error_metrics, integ.budget, integ.recovery_manager, integ.actions is not None,
                        integ.config.auto_recover)
    routes = add_routes(app, integ, timeline)
    app.middlewares.append(_middleware(integ, routes.deadline_of))
    app.cleanup_ctx.append(integ.lifetime)
    integ.app = app
    return integ
