"""The HTTP routes of SPEC section 5, added to the coordinator's own router."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from coordinator_plugins.error_handling.model import ErrorSeverity, ErrorType, ResolutionStatus
from coordinator_plugins.error_handling.storage.records import GroupQuery, GroupRecord
from coordinator_plugins.error_handling.text import storable
from coordinator_plugins.error_handling.web.dashboard_api import dashboard_routes
from coordinator_plugins.error_handling.web.deadline import Deadlines
from coordinator_plugins.error_handling.web.idempotency import Idempotency, answer_of, body_hash
from coordinator_plugins.error_handling.web.idempotency import key_of as idempotency_key
from coordinator_plugins.error_handling.web.port import ErrorsApi
from coordinator_plugins.error_handling.web.timeline import Timeline
from coordinator_plugins.error_handling.web.validate import (
    decode_cursor,
    encode_cursor,
    enum_value,
    json_body,
    opt_str,
    query_error_type,
    query_int,
    query_severity,
    query_str,
)
from coordinator_plugins.httpio import (
    OPENAPI_PATHS_KEY,
    SAFE_METHODS,
    bad,
    bearer_ok,
    json_response,
    not_found,
    require_bearer,
)

logger = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DURABLE_TIMEOUT = 30.0
READ_DEADLINE = 10.0  # s a read route may take (its flush included) before it answers 503
WRITE_DEADLINE = DURABLE_TIMEOUT + 10.0  # the same for the other routes, past the durable wait


_CTX_STRS = ("operation", "exception_type", "worker_id", "task_id", "hardware_id", "stack_trace")


class ErrorRoutes:
    def __init__(self, integ: ErrorsApi) -> None:
        self.integ = integ
        self.deadline_of: dict[web.AbstractRoute, Deadlines] = {}  # every route add_routes added
        self.token = integ.config.api_token
        self.protect_reads = integ.config.protect_reads
        self.idempotency = Idempotency(integ.store, integ.config.idempotency_ttl, integ.config.durable_timeout)

    def guard(self, method: str, handler: Handler) -> Handler:
        """``handler`` behind the bearer token when the route needs it: every POST once a token
        is set, every GET too with ``protect_reads``. The token is checked before the body is read."""
        if not self.token or (method in SAFE_METHODS and not self.protect_reads):
            return handler
        token = self.token

        async def guarded(request: web.Request) -> web.StreamResponse:
            require_bearer(request, token)
            return await handler(request)

        return guarded

    async def _body(self, request: web.Request, required: bool = True) -> dict[str, Any]:
        return await json_body(request, required, self.integ.config.body_timeout)

    def page_status(self, request: web.Request) -> int:
        """The dashboard page's status: 200, or with ``protect_reads`` and no token 401, the page
        itself for a browser (it asks for the token and keeps it for the tab), a JSON 401 for any
        other client (raised)."""
        if self.protect_reads and not bearer_ok(request, self.token):
            if "text/html" not in request.headers.get("Accept", ""):
                require_bearer(request, self.token)
            return 401
        return 200

    def _id(self, request: web.Request) -> str:
        error_id = request.match_info["error_id"]
        if len(error_id) > 64:
            raise not_found(f"unknown error id {error_id[:64]!r}")
        return storable(error_id)  # an id with a NUL is no stored id (and PostgreSQL refuses NUL)

    async def post_error(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        message = opt_str(body, "message", required=True)
        component = opt_str(body, "component", required=True, max_len=200)
        ctx: dict[str, Any] = {"component": component}
        for key in _CTX_STRS:
            if key in body:  # (most bodies carry few of them: no call for the others)
                ctx[key] = opt_str(body, key, max_len=200 if key != "stack_trace" else 65_536)
        if "error_type" in body:
            ctx["error_type"] = enum_value(ErrorType, "error_type", body)
        if "severity" in body:
            ctx["severity"] = enum_value(ErrorSeverity, "severity", body)
        if "metadata" in body:
            if not isinstance(body["metadata"], dict):
                raise bad("metadata: expected an object")
            ctx["metadata"] = body["metadata"]
        idem = idempotency_key(request, body)
        if idem is not None:  # counted once however often it is sent (web/idempotency.py)
            text = str(message)
            return await self.idempotency.post(
                idem, body_hash(body), lambda make: self.integ.ingest(text, ctx, idempotency=make))
        report, seq, recovery = await self.integ.ingest(str(message), ctx)
        await self.idempotency.durable(seq)  # a 503 says may_be_stored: the write stays queued
        return json_response({**answer_of(report), "recovery": recovery}, status=202)

    async def list_errors(self, request: web.Request) -> web.Response:
        status = request.query.get("status", "open")
        resolved = request.query.get("resolved")
        if resolved not in (None, "true", "false"):
            raise bad("resolved: expected true or false", "invalid_enum")
        if resolved == "true":  # the seed's form: every group, resolved or not
            status = "all"
        if status not in ("open", "resolved", "all"):
            raise bad("status: expected open, resolved or all", "invalid_enum")
        limit = query_int(request, "limit", 100, 1, 1000)
        component = query_str(request, "component")
        sev = query_severity(request)
        et = query_error_type(request)
        after = decode_cursor(request.query.get("cursor"))
        await self.integ.store.flush()
        page = await self.integ.store.list_groups(
            GroupQuery(status, component, sev.rank if sev else None, et.value if et else None, limit, after)
        )
        nxt = page.next_cursor
        return json_response({"errors": page.items, "next_cursor": encode_cursor(*nxt) if nxt else None})

    async def get_error(self, request: web.Request) -> web.Response:
        error_id = self._id(request)
        store = self.integ.store
        await store.flush()
        record = await store.get_group(error_id)
        alias = None
        if record is None and (alias := await store.alias(error_id)) is not None:  # a seed error folded into a group
            record = await store.get_group(alias.error_id)
        if record is None:
            raise not_found(f"unknown error id {error_id!r}")
        row = record.to_api()
        if not self.integ.config.expose_stack_traces:
            row.pop("stack_trace", None)
        row.update(related_errors=related_errors(record), related_entities=related_entities(record))
        if alias is not None:
            row.update(requested_error_id=error_id, alias=alias.to_api())
        hist = await self.integ.get_recovery_history(record.error_id) or {"current_level": 1, "history": []}
        row.update(recovery_history=hist["history"], current_recovery_level=hist["current_level"])
        return json_response(row)

    async def resolve_error(self, request: web.Request) -> web.Response:
        error_id = self._id(request)
        body = await self._body(request, required=False)
        resolution = opt_str(body, "resolution", max_len=200) or "manual"
        details = body.get("details")
        if "details" in body and not isinstance(details, dict):
            raise bad("details: expected an object")
        asked = error_id
        error_id = await self.integ.group_id(asked)  # a seed error folded into a group resolves the group
        result = await self.integ.resolve(error_id, resolution, details)
        if result is None:
            raise not_found(f"unknown error id {asked!r}")
        # status and message: the fields of the seed's answer, which its clients read
        answer = {
            "error_id": error_id,
            "resolution_status": ResolutionStatus.RESOLVED,
            "already_resolved": result,
            "status": "success",
            "message": f"error {error_id} {'was already' if result else 'is now'} resolved",
        }
        if asked != error_id:
            answer["requested_error_id"] = asked
        return json_response(answer)

    async def recovery_metrics(self, request: web.Request) -> web.Response:
        et = query_error_type(request)
        sid = query_str(request, "strategy_id", 200)
        days = query_int(request, "days", 30, 1, 3650)
        out = await self.integ.get_performance_metrics(et.value if et else None, sid, days)
        return json_response(out)

    async def recovery_history(self, request: web.Request) -> web.Response:
        limit = query_int(request, "limit", 100, 1, 1000)
        error_id = query_str(request, "error_id", 64)
        out = await self.integ.get_recovery_history(error_id, limit)
        if out is None:
            raise not_found(f"unknown error id {error_id!r}")
        return json_response(out)

    async def recovery_reset(self, request: web.Request) -> web.Response:
        body = await self._body(request, required=False)
        error_id = opt_str(body, "error_id", max_len=64)
        if error_id is None:
            n = await self.integ.reset_all_recovery_levels()
            return _reset_answer(n, f"recovery levels reset to 1: {n} group(s)")
        if await self.integ.reset_recovery_level(error_id):
            return _reset_answer(1, f"recovery level of error {error_id} reset to 1")
        if await self.integ.get_recovery_history(error_id) is None:
            raise not_found(f"unknown error id {error_id!r}")
        return _reset_answer(0, f"error {error_id} was already at level 1")

    async def diagnostics(self, request: web.Request) -> web.Response:
        return json_response(await self.integ.run_diagnostics())

    async def strategies(self, request: web.Request) -> web.Response:
        et = query_error_type(request)
        return json_response(self.integ.explain_strategies(et.value if et else None))

    async def openapi(self, request: web.Request) -> web.Response:
        from coordinator_plugins.error_handling.web.openapi import document

        cfg = self.integ.config
        doc = document(
            cfg.api_prefix,
            bool(self.token),
            self.protect_reads,
            request.app.get(OPENAPI_PATHS_KEY),
            cfg.metrics,
            cfg.dashboard_path,
        )
        return json_response(doc)

    async def metrics(self, request: web.Request) -> web.Response:
        assert self.integ.metrics is not None
        return web.Response(
            body=self.integ.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )


def related_errors(record: GroupRecord) -> list[str]:
    """The ids related to a group: the seed errors folded into it and the seed's other relations
    (``recovery_details.related_errors``, kept by the seed migration)."""
    listed = record.recovery_details.get("related_errors")
    ids = [r.get("error_id") for r in listed if isinstance(r, dict)] if isinstance(listed, list) else []
    return [i for i in ids if isinstance(i, str)]


def related_entities(record: GroupRecord) -> dict[str, Any]:
    """The seed's ``related_entities`` of a group: as the seed's context gave it (kept in
    ``metadata`` by the seed migration), else the worker, task and hardware the group names."""
    kept = record.metadata.get("related_entities")
    if isinstance(kept, dict):
        return dict(kept)
    named = {"worker_id": record.worker_id, "task_id": record.task_id, "hardware_id": record.hardware_id}
    return {k: v for k, v in named.items() if v is not None}


def _reset_answer(count: int, message: str) -> web.Response:
    """``reset`` (ours) with ``status`` and ``message`` (the seed's answer, which its clients read)."""
    return json_response({"reset": count, "status": "success", "message": message})


def _taken(app: web.Application, method: str, path: str) -> bool:
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        if (info.get("path") or info.get("formatter")) == path and route.method in (method, "*"):
            return True
    return False


def add_routes(app: web.Application, integ: ErrorsApi, timeline: Timeline) -> ErrorRoutes:
    """Mount the routes of SPEC section 5 and the dashboard's (with its ``timeline``) on ``app``."""
    r = ErrorRoutes(integ)
    p = integ.config.api_prefix
    # GET or not; a write's deadline is past its wait for the commit (durable_timeout)
    write_deadline = WRITE_DEADLINE - DURABLE_TIMEOUT + integ.config.durable_timeout
    deadlines = {True: Deadlines(READ_DEADLINE), False: Deadlines(write_deadline, writes=True)}
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
    table += dashboard_routes(app, integ, r, timeline)  # the dashboard's page, assets and read-only routes
    for method, path, handler in table:
        if _taken(app, method, path):
            logger.warning("error handling: %s %s is already served by the coordinator; left to it", method, path)
            continue
        # The dashboard's page answers an unauthorized browser itself (with the page that asks for
        # the token), and its scripts hold no data: neither is behind the guard.
        open_route = bool(integ.config.dashboard_path) and (
            path == integ.config.dashboard_path or path.startswith(integ.config.dashboard_path + "/assets/")
        )
        served = handler if open_route else r.guard(method, handler)
        route = app.router.add_route(method, path, served)
        r.deadline_of[route] = deadlines[method == "GET"]  # applied by the plugin's middleware
        if method == "GET" and not _taken(app, "HEAD", path):
            # HEAD answers as GET does, without the body (aiohttp leaves it out), as add_get would
            r.deadline_of[app.router.add_route("HEAD", path, served)] = deadlines[True]
    return r
