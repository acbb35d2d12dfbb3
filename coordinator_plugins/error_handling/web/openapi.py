"""The OpenAPI 3.1 document of the error-handling routes (kept in step with api.py by tests).

It says what this app really does: an operation declares the bearer token only when one is
configured (every POST; every GET too with ``protect_reads``), and the host application's own
routes are merged in when it documents them under :data:`coordinator_plugins.httpio.OPENAPI_PATHS_KEY`.
A schemathesis run over it (tests/test_schemathesis.py) finds nothing.
"""

from __future__ import annotations

from typing import Any

from coordinator_plugins.error_handling.model import LIST_ITEM_FIELDS, ErrorSeverity, ErrorType
from coordinator_plugins.error_handling.web.dashboard_api import openapi_paths
from coordinator_plugins.error_handling.web.validate import CURSOR_PATTERN
from coordinator_plugins.httpio import declare_bearer, openapi_document

_ERR = {"$ref": "#/components/schemas/Error"}


def _resp(desc: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


ERROR_NAMES = {
    400: "invalid input: malformed or non-strict JSON (NaN, Infinity), nesting over 32, a wrong field",
    401: "missing or wrong bearer token",
    404: "unknown id",
    408: "the request body did not arrive in time",
    409: "conflict with the current state",
    422: "Idempotency-Key (or event_id) used before for a different body",
    410: "gone: register again",
    413: "body over 1 MiB",
    415: "body sent as a media type other than JSON",
    503: "store not writing; not acknowledged (may_be_stored: whether it may still be stored)",
}
BODY_ERRORS = (400, 408, 413, 415)  # every route that reads a body may answer these


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): _resp(ERROR_NAMES[c], _ERR) for c in codes}


def _text(desc: str, media: str) -> dict[str, Any]:
    return {"description": desc, "content": {media: {"schema": {"type": "string"}}}}


def _q(name: str, schema: dict[str, Any], desc: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": desc}


NOT_BLANK = "[^ \t\r\n\f\v]"  # a required string holds something other than these (validate.py agrees)
SEVERITY = {"type": "string", "enum": [s.value for s in ErrorSeverity]}
ERROR_TYPE = {"type": "string", "enum": [t.value for t in ErrorType]}
PATH_ID = {"name": "error_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64}}


def document(
    prefix: str,
    token: bool = False,
    protect_reads: bool = False,
    extra: dict[str, Any] | None = None,
    metrics: bool = True,
    dashboard_path: str = "",
) -> dict[str, Any]:
    """The document for routes under ``prefix``; ``token``: a token is configured;
    ``extra``: the host's own ``{"paths": ...}``, merged in as they are."""
    item = {
        "type": "object",
        "required": list(LIST_ITEM_FIELDS),
        "properties": {
            "error_id": {"type": "string"},
            "error_type": ERROR_TYPE,
            "error_severity": SEVERITY,
            "category": {"type": "string"},
            "message": {"type": "string"},
            "component": {"type": "string"},
            "operation": {"type": "string"},
            "first_seen": {"type": "string", "format": "date-time"},
            "last_seen": {"type": "string", "format": "date-time"},
            "aggregated_count": {"type": "integer"},
            "retry_count": {"type": "integer"},
            "resolution_status": {"type": "string", "enum": ["open", "retrying", "resolved", "failed"]},
            "recovery_level": {"type": "integer", "minimum": 1, "maximum": 5},
        },
    }
    report_body = {
        "type": "object",
        "required": ["message", "component"],
        "properties": {
            "message": {"type": "string", "minLength": 1, "maxLength": 65536, "pattern": NOT_BLANK},
            "component": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NOT_BLANK},
            "operation": {"type": "string", "maxLength": 200},
            "error_type": ERROR_TYPE,
            "severity": SEVERITY,
            "exception_type": {"type": "string", "maxLength": 200},
            "worker_id": {"type": "string", "maxLength": 200},
            "task_id": {"type": "string", "maxLength": 200},
            "hardware_id": {"type": "string", "maxLength": 200},
            "stack_trace": {"type": "string", "maxLength": 65536},
            "metadata": {"type": "object", "description": "any JSON object, nested at most 32 deep in the body"},
            "event_id": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NOT_BLANK,
                         "description": "the client's id of this report (as Sentry's): the idempotency key "
                                        "when no Idempotency-Key header is sent"},
        },
    }
    accepted = {
        "type": "object",
        "required": [
            "error_id",
            "error_type",
            "error_severity",
            "category",
            "aggregated_count",
            "new_group",
            "recovery",
        ],
        "properties": {
            "error_id": {"type": "string"},
            "error_type": ERROR_TYPE,
            "error_severity": SEVERITY,
            "category": {"type": "string"},
            "aggregated_count": {"type": "integer", "minimum": 1},
            "new_group": {"type": "boolean"},
            "recovery": {"type": "string", "enum": ["scheduled", "in_progress", "off"]},
        },
    }
    p = prefix
    paths: dict[str, Any] = {
        f"{p}/errors": {
            "post": {
                "summary": "Report an error (durable before the 202)",
                "description": "With an Idempotency-Key header (or an event_id field) a report is counted "
                               "once however often it is sent: a retry gets the first answer again (202, "
                               "Idempotent-Replayed: true, recovery off), across restarts and at any fleet "
                               "member; the same key with another body is a 422; at another fleet member "
                               "while the first is not stored yet, a 409 with Retry-After.",
                "parameters": [{
                    "name": "Idempotency-Key", "in": "header", "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NOT_BLANK},
                    "description": "the client's key of this report; kept idempotency_ttl seconds (1 day)",
                }],
                "requestBody": {"required": True, "content": {"application/json": {"schema": report_body}}},
                "responses": {
                    "202": {**_resp("accepted and durable (or, replayed, the first answer of this key)", accepted),
                            "headers": {"Idempotent-Replayed": {
                                "description": "true when this is the stored answer of an earlier request "
                                               "with the same key (nothing was counted)",
                                "schema": {"type": "string", "enum": ["true"]}}}},
                    **_errors(*BODY_ERRORS, 409, 422, 503),
                },
            },
            "get": {
                "summary": "List error groups, newest last_seen first",
                "parameters": [
                    _q("status", {"type": "string", "enum": ["open", "resolved", "all"]}),
                    _q("resolved", {"type": "string", "enum": ["true", "false"]}, "seed form"),
                    _q("component", {"type": "string", "maxLength": 500}),
                    _q("severity", SEVERITY, "minimum severity"),
                    _q("error_type", ERROR_TYPE),
                    _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                    _q("cursor", {"type": "string", "pattern": CURSOR_PATTERN}, "next_cursor of the previous page"),
                ],
                "responses": {
                    "200": _resp(
                        "a page",
                        {
                            "type": "object",
                            "required": ["errors", "next_cursor"],
                            "properties": {
                                "errors": {"type": "array", "items": item},
                                "next_cursor": {"type": ["string", "null"]},
                            },
                        },
                    ),
                    **_errors(400),
                },
            },
        },
        f"{p}/errors/{{error_id}}": {
            "get": {
                "summary": "One error group with its recovery history",
                "parameters": [PATH_ID],
                "responses": {
                    "200": _resp(
                        "the group",
                        {
                            "allOf": [
                                item,
                                {
                                    "type": "object",
                                    "required": ["recovery_history", "current_recovery_level", "related_errors",
                                                 "related_entities"],
                                    "properties": {
                                        "recovery_history": {"type": "array"},
                                        "current_recovery_level": {"type": "integer"},
                                        "related_errors": {"type": "array", "items": {"type": "string"}},
                                        "related_entities": {"type": "object"},
                                        "requested_error_id": {"type": "string"},
                                        "alias": {"type": "object"},
                                    },
                                },
                            ]
                        },
                    ),
                    **_errors(404),
                },
            }
        },
        f"{p}/errors/{{error_id}}/resolve": {
            "post": {
                "summary": "Resolve an error group by hand",
                "parameters": [PATH_ID],
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "resolution": {"type": "string", "maxLength": 200},
                                    "details": {"type": "object"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _resp(
                        "resolved",
                        {
                            "type": "object",
                            "required": ["error_id", "resolution_status", "already_resolved", "status", "message"],
                            "properties": {"status": {"const": "success"}, "message": {"type": "string"}},
                        },
                    ),
                    **_errors(*BODY_ERRORS, 404),
                },
            }
        },
        f"{p}/recovery/metrics": {
            "get": {
                "summary": "Recovery performance per strategy",
                "parameters": [
                    _q("error_type", ERROR_TYPE),
                    _q("strategy_id", {"type": "string", "maxLength": 200}),
                    _q("days", {"type": "integer", "minimum": 1, "maximum": 3650}),
                ],
                "responses": {
                    "200": _resp(
                        "metrics", {"type": "object", "required": ["strategies", "top_strategies", "overall"]}
                    ),
                    **_errors(400),
                },
            }
        },
        f"{p}/recovery/history": {
            "get": {
                "summary": "Recovery history of one group, or a summary of all",
                "parameters": [
                    _q("error_id", {"type": "string", "maxLength": 64}),
                    _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                ],
                "responses": {"200": _resp("history"), **_errors(400, 404)},
            }
        },
        f"{p}/recovery/reset": {
            "post": {
                "summary": "Reset recovery levels (one group, or all with an empty body)",
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"error_id": {"type": "string", "maxLength": 64}},
                            }
                        }
                    },
                },
                "responses": {
                    "200": _resp(
                        "count reset",
                        {
                            "type": "object",
                            "required": ["reset", "status", "message"],
                            "properties": {
                                "reset": {"type": "integer"},
                                "status": {"const": "success"},
                                "message": {"type": "string"},
                            },
                        },
                    ),
                    **_errors(*BODY_ERRORS, 404),
                },
            }
        },
        f"{p}/recovery/strategies": {
            "get": {
                "summary": "Each strategy per error type, its evidence and why it would be chosen now",
                "parameters": [_q("error_type", ERROR_TYPE)],
                "responses": {
                    "200": _resp("explanations", {"type": "object", "required": ["selection", "error_types"]}),
                    **_errors(400),
                },
            }
        },
        f"{p}/diagnostics": {
            "get": {
                "summary": "Health of error handling",
                "responses": {
                    "200": _resp(
                        "diagnostics",
                        {
                            "type": "object",
                            "required": [
                                "status",
                                "issues",
                                "error_metrics",
                                "recovery_metrics",
                                "active_recovery_levels",
                                "database",
                            ],
                            "properties": {"status": {"type": "string", "enum": ["healthy", "degraded", "critical"]}},
                        },
                    )
                },
            }
        },
        f"{p}/openapi.json": {"get": {"summary": "This document", "responses": {"200": _resp("OpenAPI 3")}}},
    }
    paths.update(openapi_paths(p, _errors, _q, _resp, PATH_ID))  # the dashboard's read-only routes
    if metrics:
        paths["/metrics"] = {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": _text("Prometheus text format", "text/plain")},
            }
        }
    if dashboard_path:
        page = _text("the dashboard page", "text/html")
        responses = {"200": page}
        if token and protect_reads:
            # A browser without the token gets the page that asks for it; other clients JSON.
            content = {**page["content"], **_resp("", _ERR)["content"]}
            responses["401"] = {"description": ERROR_NAMES[401], "content": content}
        paths[dashboard_path] = {"get": {"summary": "The HTML dashboard", "responses": responses}}
        paths[f"{dashboard_path}/assets/{{name}}"] = {
            "get": {
                "summary": "The dashboard's scripts and style sheet (they hold no data: no token needed)",
                "parameters": [{"name": "name", "in": "path", "required": True,
                                "schema": {"type": "string", "maxLength": 64}}],
                "responses": {"200": _text("a script or style sheet", "application/javascript"), **_errors(404)},
            }
        }
    declare_bearer(paths, token, protect_reads)
    for ops in paths.values():  # every route of the plugin answers under a deadline (plugin._middleware)
        for op in ops.values():
            op["responses"].setdefault("503", _resp("the store did not answer in time; retry after Retry-After", _ERR))
    for path, ops in (extra or {}).get("paths", {}).items():
        paths.setdefault(path, {}).update(ops)
    return openapi_document("coordinator_plugins error handling", paths)
