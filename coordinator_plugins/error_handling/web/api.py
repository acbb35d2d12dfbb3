"""The HTTP routes of SPEC section 5, added to the coordinator's own router."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from coordinator_plugins.error_handling.model import ErrorSeverity, ErrorType, ResolutionStatus
from coordinator_plugins.error_handling.observe.explain import explain_strategies
from coordinator_plugins.error_handling.storage import queries
from coordinator_plugins.error_handling.web.dashboard_api import dashboard_routes
from coordinator_plugins.error_handling.web.validate import (
    ApiError,
    bad,
    decode_cursor,
    encode_cursor,
    enum_value,
    json_body,
    not_found,
    opt_str,
    query_error_type,
    query_int,
    query_severity,
    query_str,
)

if TYPE_CHECKING:
    from coordinator_plugins.error_handling.integration import EnhancedErrorHandlingIntegration

logger = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DURABLE_TIMEOUT = 30.0
_CTX_STRS = ("operation", "exception_type", "worker_id", "task_id", "hardware_id", "stack_trace")


class ErrorRoutes:
    def __init__(self, integ: EnhancedErrorHandlingIntegration) -> None:
        self.integ = integ
        self.token = integ.config.api_token.encode()

    def _auth(self, request: web.Request) -> None:
        if not self.token:
            return
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token):
            raise ApiError(401, "missing or wrong bearer token", "unauthorized")

    def authorize_read(self, request: web.Request) -> None:
        """A read needs the token too when ``protect_reads`` is on (SPEC section 8)."""
        if self.integ.config.protect_reads:
            self._auth(request)

    def _id(self, request: web.Request) -> str:
        error_id = request.match_info["error_id"]
        if len(error_id) > 64:
            raise not_found(f"unknown error id {error_id[:64]!r}")
        return error_id

    async def post_error(self, request: web.Request) -> web.Response:
        self._auth(request)
        body = await json_body(request)
        message = opt_str(body, "message", required=True)
        component = opt_str(body, "component", required=True, max_len=200)
        ctx: dict[str, Any] = {"component": component}
        for key in _CTX_STRS:
            value = opt_str(body, key, max_len=200 if key != "stack_trace" else 65_536)
            if value is not None:
                ctx[key] = value
        et = enum_value(ErrorType, "error_type", body.get("error_type"))
        sev = enum_value(ErrorSeverity, "severity", body.get("severity"))
        if et is not None:
            ctx["error_type"] = et
        if sev is not None:
            ctx["severity"] = sev
        metadata = body.get("metadata")
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise bad("metadata: expected an object")
            ctx["metadata"] = metadata
        report, seq, recovery = await self.integ.ingest(str(message), ctx)
        try:
            await self.integ.store.wait_durable(seq, DURABLE_TIMEOUT)
        except (TimeoutError, ConnectionError):
            raise ApiError(
                503, "the error store is not writing; the report was not acknowledged", "store_unavailable"
            ) from None
        return web.json_response(
            {
                "error_id": report.error_id,
                "error_type": report.error_type.value,
                "error_severity": report.error_severity.value,
                "category": report.category.value,
                "aggregated_count": report.aggregated_count,
                "new_group": report.new_group,
                "regression": report.is_regression,
                "recovery": recovery,
            },
            status=202,
        )

    async def list_errors(self, request: web.Request) -> web.Response:
        status = request.query.get("status", "open")
        if request.query.get("resolved", "").lower() in ("true", "1", "yes"):
            status = "all"
        if status not in ("open", "resolved", "all"):
            raise bad("status: expected open, resolved or all", "invalid_enum")
        limit = query_int(request, "limit", 100, 1, 1000)
        component = query_str(request, "component")
        sev = query_severity(request)
        et = query_error_type(request)
        after = decode_cursor(request.query.get("cursor"))
        await self.integ.store.flush()
        items, nxt = await self.integ.store.read(
            lambda cur: queries.list_groups(
                cur, status, component, sev.rank if sev else None, et.value if et else None, limit, after
            )
        )
        return web.json_response({"errors": items, "next_cursor": encode_cursor(*nxt) if nxt else None})

    async def get_error(self, request: web.Request) -> web.Response:
        error_id = self._id(request)
        await self.integ.store.flush()
        row = await self.integ.store.read(lambda cur: queries.get_group(cur, error_id))
        if row is None:
            raise not_found(f"unknown error id {error_id!r}")
        if not self.integ.config.expose_stack_traces:
            row.pop("stack_trace", None)
        hist = await self.integ.get_recovery_history(error_id) or {"current_level": 1, "history": []}
        row.update(recovery_history=hist["history"], current_recovery_level=hist["current_level"])
        return web.json_response(row)

    async def resolve_error(self, request: web.Request) -> web.Response:
        self._auth(request)
        error_id = self._id(request)
        body = await json_body(request, required=False)
        resolution = opt_str(body, "resolution", max_len=200) or "manual"
        details = body.get("details")
        if details is not None and not isinstance(details, dict):
            raise bad("details: expected an object")
        result = await self.integ.resolve(error_id, resolution, details)
        if result is None:
            raise not_found(f"unknown error id {error_id!r}")
        return web.json_response(
            {"error_id": error_id, "resolution_status": ResolutionStatus.RESOLVED, "already_resolved": result}
        )

    async def recovery_metrics(self, request: web.Request) -> web.Response:
        et = query_error_type(request)
        sid = query_str(request, "strategy_id", 200)
        days = query_int(request, "days", 30, 1, 3650)
        out = await self.integ.get_performance_metrics(et.value if et else None, sid, days)
        return web.json_response(out, dumps=_dumps)

    async def recovery_history(self, request: web.Request) -> web.Response:
        limit = query_int(request, "limit", 100, 1, 1000)
        error_id = query_str(request, "error_id", 64)
        out = await self.integ.get_recovery_history(error_id, limit)
        if out is None:
            raise not_found(f"unknown error id {error_id!r}")
        return web.json_response(out, dumps=_dumps)

    async def recovery_reset(self, request: web.Request) -> web.Response:
        self._auth(request)
        body = await json_body(request, required=False)
        error_id = opt_str(body, "error_id", max_len=64)
        if error_id is None:
            return web.json_response({"reset": await self.integ.reset_all_recovery_levels()})
        if await self.integ.reset_recovery_level(error_id):
            return web.json_response({"reset": 1})
        if await self.integ.get_recovery_history(error_id) is None:
            raise not_found(f"unknown error id {error_id!r}")
        return web.json_response({"reset": 0})

    async def diagnostics(self, request: web.Request) -> web.Response:
        return web.json_response(await self.integ.run_diagnostics(), dumps=_dumps)

    async def strategies(self, request: web.Request) -> web.Response:
        et = query_error_type(request)
        return web.json_response(explain_strategies(self.integ, et.value if et else None), dumps=_dumps)

    async def openapi(self, request: web.Request) -> web.Response:
        from coordinator_plugins.error_handling.web.openapi import document

        return web.json_response(document(self.integ.config.api_prefix))

    async def metrics(self, request: web.Request) -> web.Response:
        assert self.integ.metrics is not None
        return web.Response(
            body=self.integ.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, default=str)


def _taken(app: web.Application, method: str, path: str) -> bool:
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        if (info.get("path") or info.get("formatter")) == path and route.method in (method, "*"):
            return True
    return False


def add_routes(app: web.Application, integ: EnhancedErrorHandlingIntegration) -> ErrorRoutes:
    r = ErrorRoutes(integ)
    p = integ.config.api_prefix
    table: list[tuple[str, str, Handler]] = [
        ("POST", f"{p}/errors", r.post_error),
        ("GET", f"{p}/errors", r.list_errors),
        ("GET", f"{p}/errors/{{error_id}}", r.get_error),
        ("POST", f"{p}/errors/{{error_id}}/resolve", r.resolve_error),
        ("GET", f"{p}/recovery/metrics", r.recovery_metrics),
        ("GET", f"{p}/recovery/history", r.recovery_history),
        ("POST", f"{p}/recovery/reset", r.recovery_reset),
        ("GET", f"{p}/recovery/strategies", r.strategies),
        ("GET", f"{p}/diagnostics", r.diagnostics),
        ("GET", f"{p}/openapi.json", r.openapi),
    ]
    if integ.config.metrics:
        table.append(("GET", "/metrics", r.metrics))
    table += dashboard_routes(app, integ, r)  # the dashboard's page, assets and read-only routes
    for method, path, handler in table:
        if _taken(app, method, path):
            logger.warning("error handling: %s %s is already served by the coordinator; left to it", method, path)
            continue
        app.router.add_route(method, path, handler)
    return r
