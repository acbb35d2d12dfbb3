"""HTTP routes of the reference coordinator and the app built from config (``serve`` runs it:
:mod:`.serving`)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web

from coordinator_plugins.error_handling.model import ErrorType
from coordinator_plugins.httpio import (
    MAX_BODY,
    OPENAPI_PATHS_KEY,
    ApiError,
    bad,
    has_lone_surrogate,
    json_response,
    read_json,
)
from coordinator_plugins.plugins import load_plugins
from coordinator_plugins.reference.checks import check_config
from coordinator_plugins.reference.coordinator import Coordinator
from coordinator_plugins.reference.openapi import MAX_OUTPUT, coordinator_document, coordinator_paths
from coordinator_plugins.reference.security import (
    CommandPolicy,
    RouteGuard,
    SecuritySettings,
    answers_errors_under,
    error_middleware,
)
from coordinator_plugins.reference.settings import farm_security, plugin_defaults, settings_from_config
from coordinator_plugins.reference.validate import (
    check_task_spec,
    choice_field,
    id_field,
    int_field,
    number_field,
    object_field,
    str_field,
)

logger = logging.getLogger(__name__)

COORDINATOR_KEY = web.AppKey("coordinator", Coordinator)
PLUGINS_KEY = web.AppKey("plugins", dict)
SECURITY_KEY = web.AppKey("coordinator_security", SecuritySettings)
POLICY_KEY = web.AppKey("coordinator_command_policy", CommandPolicy)

IDEMPOTENCY_KEY = "Idempotency-Key"


def _coord(request: web.Request) -> Coordinator:
    return request.app[COORDINATOR_KEY]


async def _body(request: web.Request, required: bool = True) -> dict[str, Any]:
    """The JSON object body, strict (see :func:`coordinator_plugins.httpio.read_json`), and
    refused when a string in it could not be stored (a lone surrogate)."""
    body = await read_json(request, required=required, timeout=request.app[SECURITY_KEY].body_timeout)
    if has_lone_surrogate(body):
        raise bad("a string holds a lone surrogate (\\ud800-\\udfff), which is not text", "invalid_text")
    return body


async def register(request: web.Request) -> web.Response:
    """A worker (re)registers; it is given at most ``worker_max_tasks`` tasks at once, whatever it
    asks. A registration never makes the coordinator start a process (see ``restart_worker``)."""
    body = await _body(request)
    worker_id = id_field(body, "worker_id", required=True)
    max_tasks = int_field(body, "max_tasks", 1, 1000, default=1)
    pid = int_field(body, "pid", 1, 2**31 - 1)
    capabilities = object_field(body, "capabilities")
    coord = _coord(request)
    assert worker_id is not None
    w = coord.register_worker(worker_id, pid, min(max_tasks, coord.settings.worker_max_tasks), capabilities)
    return json_response(
        {
            "worker_id": w.worker_id,
            "incarnation": w.incarnation,
            "heartbeat_interval": coord.settings.heartbeat_interval,
            "max_tasks": w.max_tasks,
        }
    )


def _worker(request: web.Request) -> Any:
    """The worker the path names: 404 when unknown, 410 when it is lost or stopped (register again)."""
    coord = _coord(request)
    worker = coord.workers.get(request.match_info["worker_id"])
    if worker is None:
        raise ApiError(404, "unknown worker: register first", "not_found")
    if worker.status != "active":
        raise ApiError(410, f"worker is {worker.status}: register again", "reregister")
    return worker


async def heartbeat(request: web.Request) -> web.Response:
    body = await _body(request, required=False)
    running = body.get("running", [])
    if not isinstance(running, list) or len(running) > 10_000 or not all(isinstance(t, str) for t in running):
        raise bad("running: expected a list of task ids")
    worker = _worker(request)
    _coord(request).heartbeat(worker.worker_id)
    return json_response({"ok": True})


async def poll(request: web.Request) -> web.Response:
    body = await _body(request, required=False)
    wait = min(number_field(body, "wait", 0, 60) or 0.0, 5.0)
    coord = _coord(request)
    worker = _worker(request)
    if not worker.inbox and wait:
        try:
            async with asyncio.timeout(wait):
                await worker.wake.wait()
        except TimeoutError:
            pass
    return json_response({"tasks": coord.take_assignments(worker)})


async def submit_task(request: web.Request) -> web.Response:
    body = await _body(request)
    policy = request.app[POLICY_KEY]
    task_id = id_field(body, "task_id")
    top = {k: v for k, v in body.items() if k not in ("task_id", "spec")}
    check_task_spec(top, policy)
    spec = top
    if "spec" in body:
        spec = object_field(body, "spec")
        check_task_spec(spec, policy)
    coord = _coord(request)
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is not None:  # a retry of the same submission names the same task: never a second one
        if not key.strip() or len(key) > 200:
            raise bad(f"{IDEMPOTENCY_KEY}: expected 1 to 200 characters, not only blanks", "invalid_idempotency_key")
        task_id = task_id or "k-" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        known = coord.tasks.get(task_id)
        if known is not None:
            if known.spec != spec:
                raise ApiError(422, f"{IDEMPOTENCY_KEY} was used before (task {task_id}) for a different task; "
                                    "a retry must send the same body", "idempotency_key_reused")
            answer = json_response({"task_id": known.task_id, "status": known.status}, status=201)
            answer.headers["Idempotent-Replayed"] = "true"
            return answer
    if task_id is not None and task_id in coord.tasks:
        raise ApiError(409, f"task {task_id} exists", "task_exists")
    task = coord.submit(spec, task_id)
    if coord.settings.fleet:  # acknowledged only once durable: a survivor must know it (SPEC 10)
        try:
            await coord.db.flush()
        except Exception as exc:
            raise ApiError(503, f"task {task.task_id} is queued but not yet durable: {exc}", "not_durable",
                           extra={"may_be_stored": True}) from None
    return json_response({"task_id": task.task_id, "status": task.status}, status=201)


async def get_task(request: web.Request) -> web.Response:
    coord = _coord(request)
    task = coord.tasks.get(request.match_info["task_id"])
    if task is None and coord.settings.fleet:  # another member's task: as the fleet's database has it
        stored = await coord.db.task(request.match_info["task_id"])  # type: ignore[union-attr]
        if stored is not None:
            return json_response(stored)
    if task is None:
        raise ApiError(404, "unknown task", "not_found")
    return json_response(task.to_dict())


async def task_result(request: web.Request) -> web.Response:
    body = await _body(request)
    worker_id = id_field(body, "worker_id", required=True)
    attempt = int_field(body, "attempt", 1, 1_000_000_000, required=True)
    choice_field(body, "status", ("completed", "error"), required=True)
    choice_field(body, "outcome", ("pass", "fail"))
    int_field(body, "returncode", -(2**31), 2**31 - 1)
    str_field(body, "output", MAX_OUTPUT)
    str_field(body, "error", MAX_OUTPUT)
    str_field(body, "exception_type", 200)
    choice_field(body, "error_type", tuple(t.value for t in ErrorType))
    coord = _coord(request)
    task_id = request.match_info["task_id"]
    if task_id not in coord.tasks:
        raise ApiError(404, "unknown task", "not_found")
    assert worker_id is not None
    if not coord.accept_result(task_id, worker_id, attempt, body):
        raise ApiError(409, "stale or unknown assignment", "stale_assignment")
    return json_response({"accepted": True})


async def status(request: web.Request) -> web.Response:
    coord = _coord(request)
    health = await coord.health()
    health["workers_detail"] = [w.to_dict() for w in coord.workers.values()]
    health["coordinator_id"] = coord.settings.coordinator_id
    if coord.settings.fleet:
        health["fleet"] = {"takeovers": coord.takeovers, "members": await coord.db.members()}  # type: ignore[union-attr]
    return json_response(health)


async def openapi(request: web.Request) -> web.Response:
    return json_response(coordinator_document(request.app[OPENAPI_PATHS_KEY]))


def _serves(app: web.Application, path: str) -> bool:
    return any(r.canonical == path for r in app.router.resources())


def build_app(config: Mapping[str, Any] | None = None, coordinator: Coordinator | None = None) -> web.Application:
    """The reference coordinator's app with the plugins its config enables (validated first)."""
    config = config or {}
    check_config(config)  # every problem at once, a line each
    settings = settings_from_config(config)
    security = farm_security(config)  # the plugin's token and protect_reads too, when only it sets them
    policy = CommandPolicy.for_host(settings.host, security)
    coord = coordinator or Coordinator(settings)
    coord.launcher.token = security.api_token  # launched workers get it in their environment
    app = web.Application(client_max_size=MAX_BODY)
    app[COORDINATOR_KEY] = coord
    app[POLICY_KEY] = policy
    app[SECURITY_KEY] = security
    coord.app = app  # type: ignore[attr-defined]  # seed-compatible: plugins find the app here
    # Every route of the coordinator's own is guarded (Host, Origin, Content-Type, token); a
    # plugin's routes are guarded by the plugin, whose token and hosts default to these.
    guard = RouteGuard(security, settings.host)
    app.router.add_post("/api/workers/register", guard.wrap("POST", register))
    app.router.add_post("/api/workers/{worker_id}/heartbeat", guard.wrap("POST", heartbeat))
    app.router.add_post("/api/workers/{worker_id}/poll", guard.wrap("POST", poll))
    app.router.add_post("/api/tasks", guard.wrap("POST", submit_task))
    app.router.add_get("/api/tasks/{task_id}", guard.wrap("GET", get_task))
    app.router.add_post("/api/tasks/{task_id}/result", guard.wrap("POST", task_result))
    app.router.add_get("/api/status", guard.wrap("GET", status))

    app[PLUGINS_KEY] = load_plugins(app, coord, plugin_defaults(config, security, settings.host))
    if not any(answers_errors_under(m, "/api") for m in app.middlewares):
        # JSON errors and a JSON 500 of our own, unless a plugin's middleware answers them (the
        # error handling plugin does, and reports the exception too): one layer per request.
        app.middlewares.insert(0, error_middleware("/api"))
    own_document = not _serves(app, "/api/openapi.json")
    if own_document:
        app.router.add_get("/api/openapi.json", guard.wrap("GET", openapi))
    app[OPENAPI_PATHS_KEY] = coordinator_paths(security, policy, openapi=own_document)

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
