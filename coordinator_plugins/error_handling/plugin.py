"""``setup(app, coordinator, config)``: the aiohttp-extension entry point of the plugin."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from coordinator_plugins.error_handling.config import ErrorHandlingConfig, validate_config
from coordinator_plugins.error_handling.integration import EnhancedErrorHandlingIntegration
from coordinator_plugins.error_handling.web.api import add_routes
from coordinator_plugins.error_handling.web.deadline import Deadlines, busy
from coordinator_plugins.guard import BrowserGuard, HostPolicy
from coordinator_plugins.httpio import is_json_error, json_error_from, json_response

logger = logging.getLogger(__name__)

ERROR_HANDLING_KEY = web.AppKey("error_handling", EnhancedErrorHandlingIntegration)


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
        entry, seconds = None, 0.0
        if deadline is not None:
            guard.check(request)
            task = asyncio.current_task()
            assert task is not None
            entry, seconds = deadline.enter(task), deadline.seconds
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400 and request.path.startswith(prefix) and not is_json_error(exc):
                return json_error_from(exc)  # keeps its headers: Allow on a 405
            raise
        except asyncio.CancelledError:
            if entry is not None and Deadlines.owns(entry):
                raise busy(seconds) from None
            raise
        except Exception as exc:
            if entry is not None and isinstance(exc, TimeoutError):  # a wait inside the handler gave up
                raise busy(seconds) from None
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


def attach(integ: EnhancedErrorHandlingIntegration, app: web.Application) -> EnhancedErrorHandlingIntegration:
    """Mount an integration on ``app``: state under ERROR_HANDLING_KEY, routes, middleware, lifetime.

    The part of :func:`setup` that needs the app; ``integration.attach(app)`` calls it."""
    if not isinstance(app, web.Application):
        raise ValueError(f"app: expected an aiohttp.web.Application, got {type(app).__name__}")
    if app.frozen:
        raise RuntimeError("error_handling.setup: the app has already started; call setup before it starts")
    if ERROR_HANDLING_KEY in app:
        raise RuntimeError("error_handling.setup: error handling is already set up on this app")
    if integ.app is not None:
        raise RuntimeError("error_handling.attach: this integration is already attached to an app")
    app[ERROR_HANDLING_KEY] = integ
    routes = add_routes(app, integ)
    app.middlewares.append(_middleware(integ, routes.deadline_of))
    app.cleanup_ctx.append(integ.lifetime)
    integ.app = app
    return integ


def setup(
    app: web.Application, coordinator: Any = None, config: Mapping[str, Any] | ErrorHandlingConfig | None = None
) -> EnhancedErrorHandlingIntegration:
    """Install error handling on ``app``: routes, middleware, lifetime. Call before the app starts."""
    if not isinstance(app, web.Application):
        raise ValueError(f"app: expected an aiohttp.web.Application, got {type(app).__name__}")
    if app.frozen:
        raise RuntimeError("error_handling.setup: the app has already started; call setup before it starts")
    if ERROR_HANDLING_KEY in app:
        raise RuntimeError("error_handling.setup: error handling is already set up on this app")
    cfg = validate_config(config)
    integ = EnhancedErrorHandlingIntegration(coordinator, cfg)
    attach(integ, app)
    if coordinator is not None:
        coordinator.enhanced_error_handling = integ
    logger.info("error handling installed (database %s, selection %s)", cfg.database, cfg.selection)
    return integ


setup.validate_config = validate_config  # type: ignore[attr-defined]  # used by load_plugins


def _attach_when_app_is_set(coordinator: Any, integ: EnhancedErrorHandlingIntegration) -> bool:
    """Make ``coordinator.app = web.Application()`` attach ``integ`` to that app, as the seed
    coordinator's order needs (it installs in ``__init__`` and creates its app later). Done by
    giving the instance a subclass of its own class whose ``__setattr__`` watches ``app``. False
    when the class cannot be subclassed that way (slots, extension types): then the caller must
    call ``integration.attach(app)``."""
    cls = type(coordinator)
    base_setattr: Callable[..., None] = cls.__setattr__

    def __setattr__(self: Any, name: str, value: Any) -> None:
        base_setattr(self, name, value)
        if name == "app" and isinstance(value, web.Application) and integ.app is None:
            attach(integ, value)
            logger.info("error handling attached to the coordinator's new app")

    try:
        watcher = type(cls.__name__, (cls,), {"__setattr__": __setattr__, "__module__": cls.__module__})
        coordinator.__class__ = watcher
    except TypeError:
        return False
    return True


def install_enhanced_error_handling(
    coordinator: Any, config: Mapping[str, Any] | ErrorHandlingConfig | None = None
) -> EnhancedErrorHandlingIntegration:
    """Seed-compatible entry (SPEC 11): installs on ``coordinator.app``.

    Called before the coordinator has an app (the seed coordinator's order), it installs
    everything that needs no app now and mounts the routes when ``coordinator.app`` is assigned;
    call ``integration.attach(app)`` yourself when the app is never assigned to
    ``coordinator.app`` or is created before this call on another attribute."""
    app = getattr(coordinator, "app", None)
    if isinstance(app, web.Application):
        return setup(app, coordinator, config)
    if app is not None:
        raise ValueError(f"coordinator.app: expected an aiohttp.web.Application or None, got {type(app).__name__}")
    integ = EnhancedErrorHandlingIntegration(coordinator, validate_config(config))
    coordinator.enhanced_error_handling = integ
    if not _attach_when_app_is_set(coordinator, integ):
        logger.warning(
            "error handling installed without an app: call integration.attach(app) before the app starts"
        )
    else:
        logger.info("error handling installed; its routes are mounted when the coordinator creates its app")
    return integ
