"""``setup(app, coordinator, config)``: the aiohttp-extension entry point of the plugin."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from coordinator_plugins.error_handling.config import ErrorHandlingConfig, validate_config
from coordinator_plugins.error_handling.integration import EnhancedErrorHandlingIntegration
from coordinator_plugins.error_handling.web.api import add_routes
from coordinator_plugins.httpio import is_json_error, json_error_from, json_response

logger = logging.getLogger(__name__)

ERROR_HANDLING_KEY = web.AppKey("error_handling", EnhancedErrorHandlingIntegration)


def _middleware(integ: EnhancedErrorHandlingIntegration) -> Any:
    prefix = integ.config.api_prefix

    @web.middleware
    async def capture_errors(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400 and request.path.startswith(prefix) and not is_json_error(exc):
                return json_error_from(exc)  # keeps its headers: Allow on a 405
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            route = request.match_info.route.resource
            operation = route.canonical if route is not None else request.path
            error_id = None
            if integ.started and not integ.closed:
                try:
                    report = await integ.report_error(
                        exc, {"component": "coordinator", "operation": f"{request.method} {operation}"}
                    )
                    error_id = report.error_id
                except Exception:
                    logger.exception("could not report a handler error")
            logger.error("unhandled error in %s %s: %r", request.method, operation, exc)
            return json_response({"error": "internal error", "code": "internal_error", "error_id": error_id}, 500)

    return capture_errors


def setup(
    app: web.Application, coordinator: Any = None, config: Mapping[str, Any] | ErrorHandlingConfig | None = None
) -> EnhancedErrorHandlingIntegration:
    """Install error handling on ``app``: routes, middleware, lifetime. Call before the app starts."""
    if app.frozen:
        raise RuntimeError("error_handling.setup: the app has already started; call setup before it starts")
    if ERROR_HANDLING_KEY in app:
        raise RuntimeError("error_handling.setup: error handling is already set up on this app")
    cfg = validate_config(config)
    integ = EnhancedErrorHandlingIntegration(coordinator, cfg)
    app[ERROR_HANDLING_KEY] = integ
    add_routes(app, integ)
    app.middlewares.append(_middleware(integ))
    app.cleanup_ctx.append(integ.lifetime)
    if coordinator is not None:
        coordinator.enhanced_error_handling = integ
    logger.info("error handling installed (database %s, selection %s)", cfg.database, cfg.selection)
    return integ


setup.validate_config = validate_config  # type: ignore[attr-defined]  # used by load_plugins


def install_enhanced_error_handling(
    coordinator: Any, config: Mapping[str, Any] | None = None
) -> EnhancedErrorHandlingIntegration:
    """Seed-compatible entry: installs on ``coordinator.app``."""
    app = getattr(coordinator, "app", None)
    if not isinstance(app, web.Application):
        raise ValueError("coordinator.app: expected an aiohttp.web.Application")
    return setup(app, coordinator, config)
