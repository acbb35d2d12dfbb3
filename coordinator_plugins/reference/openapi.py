"""The OpenAPI paths of the reference coordinator's own routes (kept in step with app.py by tests).

They are what the request validation in :mod:`.app` accepts, exactly, and they declare the
bearer token where the coordinator requires it. Under the error-handling plugin they are merged
into its document at ``/api/openapi.json``; without it the coordinator serves them there itself.
"""

from __future__ import annotations

from typing import Any

from coordinator_plugins.error_handling.model import ErrorType
from coordinator_plugins.httpio import declare_bearer, openapi_document
from coordinator_plugins.reference.security import CommandPolicy, SecuritySettings

ID_PATTERN = "^[A-Za-z0-9._:@-]+$"
ID = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": ID_PATTERN}
NO_NUL = "^[^\\u0000]*$"
OUTCOMES = ("pass", "fail", "error", "hang")
MAX_ARGS = 1000
MAX_ARG = 4096
MAX_OUTPUT = 65_536
_ERR = {"$ref": "#/components/schemas/Error"}
_NAMES = {
    400: "invalid input",
    404: "unknown id",
    408: "the request body did not arrive in time",
    409: "conflict with the current state",
    422: "Idempotency-Key used before for a different body",
    410: "the worker is lost or stopped: register again",
    403: "a cross-site Origin (a page on another origin may change nothing here)",
    413: "body over 1 MiB",
    415: "a body not sent as Content-Type: application/json",
    421: "a Host this server does not answer to (DNS rebinding); see allowed_hosts",
}


def _resp(desc: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): _resp(_NAMES[c], _ERR) for c in codes}


def _obj(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(required)
    return out


def _body(schema: dict[str, Any], required: bool) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": ID}


def task_spec_schema(policy: CommandPolicy) -> dict[str, Any]:
    """A task spec as the coordinator accepts it: a ``sim`` task, or a ``command`` task (an argv,
    run without a shell) where ``policy`` allows one, its ``argv[0]`` among the allowed programs."""
    properties: dict[str, Any] = {
        "kind": {"type": "string", "enum": ["sim"], "default": "sim"},
        "duration": {"type": "number", "minimum": 0, "maximum": 3600, "description": "sim: seconds"},
        "outcome": {"type": "string", "enum": list(OUTCOMES), "description": "sim: how it ends"},
        "message": {"type": "string", "maxLength": 2000, "description": "sim: the error of outcome error"},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
    }
    kinds = ["sim"]
    if policy.allowed != ():  # command tasks may run: argv is checked (where none may, it is inert)
        kinds.append("command")
        properties["kind"]["enum"] = kinds
        first = (
            {"type": "string", "enum": list(policy.allowed)}
            if policy.allowed
            else {"type": "string", "minLength": 1, "maxLength": MAX_ARG, "pattern": NO_NUL}
        )
        properties["argv"] = {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_ARGS,
            "prefixItems": [first],
            "items": {"type": "string", "maxLength": MAX_ARG, "pattern": NO_NUL},
            "description": "the program and its arguments, run without a shell",
        }
    spec = _obj(properties)
    if "command" in kinds:
        spec["if"] = {"properties": {"kind": {"const": "command"}}, "required": ["kind"]}
        spec["then"] = {"required": ["argv"]}
    return spec


def coordinator_paths(security: SecuritySettings, policy: CommandPolicy, openapi: bool = False) -> dict[str, Any]:
    """``{"paths": ...}`` of the coordinator's routes; ``openapi``: include its own
    ``GET /api/openapi.json`` (served when no plugin serves one)."""
    spec = task_spec_schema(policy)
    submit = {
        **spec,
        "properties": {
            **spec["properties"],
            "task_id": {**ID, "description": "default: a new id"},
            "spec": {**spec, "description": "the spec; when absent, the fields above are it"},
        },
    }
    task = _obj(
        {
            "task_id": {"type": "string"},
            "spec": {"type": "object"},
            "status": {"type": "string", "enum": ["pending", "assigned", "running", "completed", "failed"]},
            "worker_id": {"type": ["string", "null"]},
            "attempt": {"type": "integer"},
            "result": {"type": ["object", "null"]},
            "error": {"type": ["string", "null"]},
        },
        ("task_id", "spec", "status", "worker_id", "attempt", "result", "error"),
    )
    result = _obj(
        {
            "worker_id": ID,
            "attempt": {"type": "integer", "minimum": 1, "maximum": 1_000_000_000},
            "status": {"type": "string", "enum": ["completed", "error"]},
            "outcome": {"type": "string", "enum": ["pass", "fail"]},
            "returncode": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
            "output": {"type": "string", "maxLength": MAX_OUTPUT},
            "error": {"type": "string", "maxLength": MAX_OUTPUT},
            "exception_type": {"type": "string", "maxLength": 200},
            "error_type": {"type": "string", "enum": [t.value for t in ErrorType]},
        },
        ("worker_id", "attempt", "status"),
    )
    body_errors = (400, 403, 408, 413, 415)
    paths: dict[str, Any] = {
        "/api/workers/register": {
            "post": {
                "summary": "Register a worker (again: a new incarnation, its old tasks requeued)",
                "requestBody": _body(
                    _obj(
                        {
                            "worker_id": ID,
                            "pid": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
                            "max_tasks": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1},
                            "capabilities": {"type": "object"},
                        },
                        ("worker_id",),
                    ),
                    True,
                ),
                "responses": {
                    "200": _resp(
                        "registered",
                        _obj(
                            {
                                "worker_id": {"type": "string"},
                                "incarnation": {"type": "integer", "minimum": 1},
                                "heartbeat_interval": {"type": "number"},
                                "max_tasks": {
                                    "type": "integer",
                                    "minimum": 1,
                                    "description": "tasks it is given at once: at most [coordinator] worker_max_tasks",
                                },
                            },
                            ("worker_id", "incarnation", "heartbeat_interval", "max_tasks"),
                        ),
                    ),
                    **_errors(*body_errors),
                },
            }
        },
        "/api/workers/{worker_id}/heartbeat": {
            "post": {
                "summary": "A worker is alive",
                "parameters": [_path("worker_id")],
                "requestBody": _body(
                    _obj({"running": {"type": "array", "maxItems": 10_000, "items": {"type": "string"}}}), False
                ),
                "responses": {
                    "200": _resp("noted", _obj({"ok": {"type": "boolean"}}, ("ok",))),
                    **_errors(*body_errors, 404, 410),
                },
            }
        },
        "/api/workers/{worker_id}/poll": {
            "post": {
                "summary": "A worker takes the tasks assigned to it, waiting up to `wait` (at most 5) s for one",
                "parameters": [_path("worker_id")],
                "requestBody": _body(_obj({"wait": {"type": "number", "minimum": 0, "maximum": 60}}), False),
                "responses": {
                    "200": _resp(
                        "assignments",
                        _obj(
                            {
                                "tasks": {
                                    "type": "array",
                                    "items": _obj(
                                        {
                                            "task_id": {"type": "string"},
                                            "attempt": {"type": "integer"},
                                            "spec": {"type": "object"},
                                        },
                                        ("task_id", "attempt", "spec"),
                                    ),
                                }
                            },
                            ("tasks",),
                        ),
                    ),
                    **_errors(*body_errors, 404, 410),
                },
            }
        },
        "/api/tasks": {
            "post": {
                "summary": "Submit a task",
                "parameters": [{
                    "name": "Idempotency-Key", "in": "header", "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "[^ \t\r\n\f\v]"},
                    "description": "the client's key of this submission: a retry with the same key and body "
                                   "answers the first task again (Idempotent-Replayed: true), never a second "
                                   "task; with another body, 422. Without task_id the task's id is drawn "
                                   "from the key.",
                }],
                "requestBody": _body(submit, True),
                "responses": {
                    "201": {**_resp(
                        "queued (or, replayed, the task an earlier request with this key queued)",
                        _obj({"task_id": {"type": "string"}, "status": {"type": "string"}}, ("task_id", "status")),
                    ), "headers": {"Idempotent-Replayed": {"schema": {"type": "string", "enum": ["true"]}}}},
                    **_errors(*body_errors, 409, 422),
                },
            }
        },
        "/api/tasks/{task_id}": {
            "get": {
                "summary": "One task",
                "parameters": [_path("task_id")],
                "responses": {"200": _resp("the task", task), **_errors(404)},
            }
        },
        "/api/tasks/{task_id}/result": {
            "post": {
                "summary": "A worker reports the result of its assignment",
                "parameters": [_path("task_id")],
                "requestBody": _body(result, True),
                "responses": {
                    "200": _resp("accepted", _obj({"accepted": {"type": "boolean"}}, ("accepted",))),
                    **_errors(*body_errors, 404, 409),
                },
            }
        },
        "/api/status": {
            "get": {
                "summary": "The coordinator's health, its loops, workers and queue",
                "responses": {"200": _resp("health", _obj({"workers_detail": {"type": "array"}}, ("workers_detail",)))},
            }
        },
    }
    if openapi:
        paths["/api/openapi.json"] = {"get": {"summary": "This document", "responses": {"200": _resp("OpenAPI 3")}}}
    for ops in paths.values():  # every route refuses a Host it does not answer to
        for op in ops.values():
            op["responses"].update(_errors(421))
    if policy.status == 403:
        paths["/api/tasks"]["post"]["description"] = f"Command tasks are not enabled: {policy.why_none}."
    return {"paths": declare_bearer(paths, bool(security.api_token), security.protect_reads)}


def coordinator_document(paths: dict[str, Any]) -> dict[str, Any]:
    """The coordinator's own document, when no plugin serves one."""
    return openapi_document("coordinator_plugins reference coordinator", paths["paths"])
