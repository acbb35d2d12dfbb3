"""The OpenAPI 3 document of the error-handling routes (kept in step with api.py by tests)."""

from __future__ import annotations

from typing import Any

from coordinator_plugins.error_handling.model import LIST_ITEM_FIELDS, ErrorSeverity, ErrorType
from coordinator_plugins.error_handling.web.dashboard_api import openapi_paths

_ERR = {"$ref": "#/components/schemas/Error"}


def _resp(desc: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    names = {
        400: "invalid input",
        401: "missing or wrong bearer token",
        404: "unknown id",
        413: "body over 1 MiB",
        503: "store not writing; not acknowledged",
    }
    return {str(c): _resp(names[c], _ERR) for c in codes}


def _q(name: str, schema: dict[str, Any], desc: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": desc}


SEVERITY = {"type": "string", "enum": [s.value for s in ErrorSeverity]}
ERROR_TYPE = {"type": "string", "enum": [t.value for t in ErrorType]}
PATH_ID = {"name": "error_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64}}


def document(prefix: str) -> dict[str, Any]:
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
            "message": {"type": "string", "minLength": 1, "maxLength": 65536, "pattern": r"\S"},
            "component": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"\S"},
            "operation": {"type": "string", "maxLength": 200},
            "error_type": ERROR_TYPE,
            "severity": SEVERITY,
            "exception_type": {"type": "string", "maxLength": 200},
            "worker_id": {"type": "string", "maxLength": 200},
            "task_id": {"type": "string", "maxLength": 200},
            "hardware_id": {"type": "string", "maxLength": 200},
            "stack_trace": {"type": "string", "maxLength": 65536},
            "metadata": {"type": "object"},
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
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    p = prefix
    paths: dict[str, Any] = {
        f"{p}/errors": {
            "post": {
                "summary": "Report an error (durable before the 202)",
                "security": bearer,
                "requestBody": {"required": True, "content": {"application/json": {"schema": report_body}}},
                "responses": {"202": _resp("accepted and durable", accepted), **_errors(400, 401, 413, 503)},
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
                    _q("cursor", {"type": "string"}, "next_cursor of the previous page"),
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
                                    "required": ["recovery_history", "current_recovery_level"],
                                    "properties": {
                                        "recovery_history": {"type": "array"},
                                        "current_recovery_level": {"type": "integer"},
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
                "security": bearer,
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
                        {"type": "object", "required": ["error_id", "resolution_status", "already_resolved"]},
                    ),
                    **_errors(400, 401, 404, 413),
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
                "security": bearer,
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
                        {"type": "object", "required": ["reset"], "properties": {"reset": {"type": "integer"}}},
                    ),
                    **_errors(400, 401, 404, 413),
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
    return {
        "openapi": "3.1.0",
        "info": {"title": "coordinator_plugins error handling", "version": "0.1.0"},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "code"],
                    "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
                }
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
