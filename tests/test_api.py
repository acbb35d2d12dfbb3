"""Issue 6: the HTTP API on the coordinator's router."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from conftest import farm_config
from coordinator_plugins.error_handling import ERROR_HANDLING_KEY
from coordinator_plugins.reference import build_app


JSON = {"Content-Type": "application/json"}


async def post_error(farm: Any, **body: Any) -> tuple[int, Any]:
    return await farm.post("/api/errors", {"message": "Connection reset by peer", "component": "worker", **body})


async def test_post_error_is_durable_before_202(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False})
    status, body = await post_error(farm, exception_type="ConnectionResetError", worker_id="w1",
                                    metadata={"attempt": 3})
    assert status == 202, body
    assert body["error_type"] == "network" and body["category"] == "connection" and body["new_group"]
    assert body["recovery"] == "off" and body["aggregated_count"] == 1
    stored = await farm.integ.store.get_group(body["error_id"])  # committed before the 202, no flush
    assert stored is not None and (stored.aggregated_count, stored.worker_id) == (1, "w1")
    status, again = await post_error(farm, exception_type="ConnectionResetError", worker_id="w1")
    assert again["error_id"] == body["error_id"] and not again["new_group"] and again["aggregated_count"] == 2


async def test_post_error_schedules_recovery(make_farm) -> None:
    farm = await make_farm(plugin={"builtin_strategies": ["retry", "database"]})
    status, body = await post_error(farm, message="Database connection lost", component="db",
                                    exception_type="ConnectionException", severity="critical")
    assert status == 202 and body["recovery"] in ("scheduled", "in_progress")
    assert body["error_severity"] == "critical"
    # no strategy can act on it (retry has no operation or task to re-run): no recovery at all
    status, body = await post_error(farm, message="Permission denied on /srv/spool", component="spool",
                                    exception_type="PermissionError")
    assert status == 202 and body["recovery"] == "off"


@pytest.mark.parametrize(("raw", "code"), [
    (b"{not json", "malformed_json"),
    (b"[1, 2]", "invalid_body"),
    (b"", "missing_body"),
    (b'{"component": "w"}', "missing_field"),
    (b'{"message": "x"}', "missing_field"),
    (b'{"message": 5, "component": "w"}', "invalid_field"),
    (b'{"message": "   ", "component": "w"}', "invalid_field"),
    (b'{"message": "x", "component": "w", "error_type": "cosmic"}', "invalid_enum"),
    (b'{"message": "x", "component": "w", "severity": "urgent"}', "invalid_enum"),
    (b'{"message": "x", "component": "w", "metadata": [1]}', "invalid_field"),
    (b'{"message": "x", "component": "w", "worker_id": 7}', "invalid_field"),
])
async def test_post_error_rejects_bad_input(make_farm, raw: bytes, code: str) -> None:
    farm = await make_farm(plugin={"auto_recover": False})
    status, body = await farm.post("/api/errors", data=raw, headers={"Content-Type": "application/json"})
    assert status == 400 and body["code"] == code and body["error"]


async def test_post_error_accepts_every_json_media_type_and_a_bom(make_farm) -> None:
    """The exact ``application/json`` is taken without parsing the header; any other spelling of
    a JSON type is parsed and accepted; a UTF-8 byte order mark before the body is ignored."""
    farm = await make_farm(plugin={"auto_recover": False})
    body = b'{"message": "m \xc3\xa9", "component": "w"}'
    for i, (ctype, raw) in enumerate([
        ("application/json", body),
        ("application/json; charset=utf-8", body),
        ("APPLICATION/JSON", body),
        ("application/problem+json", body),
        ("application/json", b"\xef\xbb\xbf" + body),
    ]):
        status, out = await farm.post("/api/errors", data=raw.replace(b"m ", f"m{i} ".encode()),
                                      headers={"Content-Type": ctype})
        assert status == 202, (ctype, out)
    for ctype in ("application/jsonx", "text/json", "application/json-seq"):
        status, out = await farm.post("/api/errors", data=body, headers={"Content-Type": ctype})
        assert status == 415 and out["code"] == "unsupported_media_type", ctype
    status, out = await farm.post("/api/errors", data=b"\xef\xbb\xbf\xef\xbb\xbf" + body, headers=JSON_CT)
    assert status == 400 and out["code"] == "malformed_json"  # one mark is ignored, not two


JSON_CT = {"Content-Type": "application/json"}


async def test_oversized_body_is_413(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False})
    big = b'{"message": "' + b"x" * (1024 * 1024 + 10) + b'", "component": "w"}'
    status, body = await farm.post("/api/errors", data=big, headers={"Content-Type": "application/json"})
    assert status == 413 and body["code"] == "body_too_large"


async def test_list_filters_and_seed_query_forms(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False})
    ids = {}
    for comp, sev, msg in [("a", "low", "low thing"), ("b", "high", "high thing"), ("c", "critical", "crit thing")]:
        ids[comp] = (await post_error(farm, component=comp, severity=sev, message=msg))[1]["error_id"]
    await farm.post(f"/api/errors/{ids['a']}/resolve")
    status, body = await farm.get("/api/errors")
    assert status == 200 and {e["error_id"] for e in body["errors"]} == {ids["b"], ids["c"]}
    assert body["next_cursor"] is None
    item = body["errors"][0]
    for key in ("error_id", "error_type", "error_severity", "category", "message", "component", "operation",
                "first_seen", "last_seen", "aggregated_count", "retry_count", "resolution_status", "recovery_level"):
        assert key in item
    assert body["errors"][0]["error_id"] == ids["c"]  # newest last_seen first
    assert {e["error_id"] for e in (await farm.get("/api/errors?resolved=true"))[1]["errors"]} == set(ids.values())
    assert [e["error_id"] for e in (await farm.get("/api/errors?status=resolved"))[1]["errors"]] == [ids["a"]]
    high = (await farm.get("/api/errors?severity=high&status=all"))[1]["errors"]
    assert {e["error_id"] for e in high} == {ids["b"], ids["c"]}
    assert [e["error_id"] for e in (await farm.get("/api/errors?component=b"))[1]["errors"]] == [ids["b"]]
    assert (await farm.get("/api/errors?error_type=network&status=all"))[1]["errors"] == []
    for bad in ("limit=0", "limit=1001", "limit=x", "status=closed", "severity=urgent", "error_type=cosmic",
                "cursor=garbage"):
        status, body = await farm.get(f"/api/errors?{bad}")
        assert status == 400 and body["code"], bad


async def test_cursor_pages_each_group_once_while_new_ones_arrive(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False})
    for i in range(57):
        await farm.integ.report_error(f"failure kind {chr(65 + i % 26)}{chr(65 + i // 26)}", {"component": "c"})
    seen: list[str] = []
    cursor = None
    while True:
        q = "/api/errors?limit=10" + (f"&cursor={cursor}" if cursor else "")
        status, body = await farm.get(q)
        assert status == 200
        seen += [e["error_id"] for e in body["errors"]]
        await farm.integ.report_error(f"newcomer {chr(97 + len(seen) % 26)}{len(seen) // 26}x", {"component": "n"})
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    originals = {r.error_id for r in farm.integ.error_handler.groups if r.context.component == "c"}
    assert originals <= set(seen)


async def test_get_one_error_and_stack_traces(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False})
    _, body = await post_error(farm, stack_trace="Traceback: secret path /srv/app.py line 3")
    status, item = await farm.get(f"/api/errors/{body['error_id']}")
    assert status == 200 and item["current_recovery_level"] == 1 and item["recovery_history"] == []
    assert "stack_trace" not in item and "secret" not in str(item)
    status, err = await farm.get("/api/errors/nope")
    assert status == 404 and err["code"] == "not_found"


async def test_stack_traces_when_allowed(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "expose_stack_traces": True})
    _, body = await post_error(farm, stack_trace="Traceback: line 3")
    assert (await farm.get(f"/api/errors/{body['error_id']}"))[1]["stack_trace"] == "Traceback: line 3"


async def test_resolve(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False})
    _, body = await post_error(farm)
    eid = body["error_id"]
    status, out = await farm.post(f"/api/errors/{eid}/resolve", {"resolution": "fixed cable", "details": {"by": "me"}})
    assert status == 200 and out == {"error_id": eid, "resolution_status": "resolved", "already_resolved": False,
                                     "status": "success", "message": f"error {eid} is now resolved"}
    status, out = await farm.post(f"/api/errors/{eid}/resolve")
    assert out["already_resolved"] is True
    assert (await farm.post("/api/errors/unknown/resolve"))[0] == 404
    assert (await farm.post(f"/api/errors/{eid}/resolve", data=b"{bad", headers=JSON))[0] == 400
    status, out = await farm.post(f"/api/errors/{eid}/resolve", data=b"{}")  # sent as application/octet-stream
    assert status == 415 and out["code"] == "unsupported_media_type"
    status, out = await farm.post(f"/api/errors/{eid}/resolve", {"details": "not an object"})
    assert status == 400


async def test_recovery_routes(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "builtin_strategies": ["worker"], "verify_window": 0},
                           workers=1)
    assert await farm.coord.launcher.kill("worker-1")  # lost for real: a worker that runs is not restarted
    ok, info = await farm.integ.handle_error("worker lost", {"component": "worker", "worker_id": "worker-1"})
    assert ok
    status, metrics = await farm.get("/api/recovery/metrics?days=7")
    assert status == 200 and metrics["strategies"]["worker"]["total_executions"] == 1
    assert metrics["overall"]["total_executions"] == 1 and metrics["top_strategies"]["worker"]["strategy_id"] == "worker"
    assert (await farm.get("/api/recovery/metrics?strategy_id=retry"))[1]["overall"]["total_executions"] == 0
    for bad in ("days=0", "days=3651", "days=x", "error_type=cosmic"):
        assert (await farm.get(f"/api/recovery/metrics?{bad}"))[0] == 400, bad
    status, hist = await farm.get(f"/api/recovery/history?error_id={info['error_id']}")
    assert status == 200 and hist["current_level"] == 1 and hist["history"][0]["success"]
    assert (await farm.get("/api/recovery/history?error_id=unknown"))[0] == 404
    status, summary = await farm.get("/api/recovery/history")
    assert status == 200 and summary["summary"]["recoveries"] == 1 and summary["errors"]
    status, strategies = await farm.get("/api/recovery/strategies?error_type=worker")
    assert status == 200 and strategies["selection"] == "adaptive"
    entry = strategies["error_types"]["worker"]["strategies"][0]
    assert entry["strategy_id"] == "worker" and entry["samples"] == 1 and "why" in entry
    assert (await farm.get("/api/recovery/strategies?error_type=x"))[0] == 400
    status, diag = await farm.get("/api/diagnostics")
    assert status == 200 and diag["status"] in ("healthy", "degraded", "critical")
    for key in ("issues", "error_metrics", "recovery_metrics", "active_recovery_levels", "database"):
        assert key in diag


async def test_reset_levels(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "builtin_strategies": [], "strategies": {}})
    report = await farm.integ.report_error("x failed", {"component": "c"})
    farm.integ.recovery_manager.state(report.error_id).level = 4
    status, out = await farm.post("/api/recovery/reset", {"error_id": report.error_id})
    assert status == 200 and out["reset"] == 1 and out["status"] == "success"
    assert farm.integ.recovery_manager.levels[report.error_id].level == 1
    assert (await farm.post("/api/recovery/reset", {"error_id": "nope"}))[0] == 404
    status, out = await farm.post("/api/recovery/reset")
    assert status == 200 and out["reset"] == 1
    assert (await farm.post("/api/recovery/reset", {"error_id": 5}))[0] == 400


async def test_auth_on_posts_only(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "api_token": "s3cret"})
    body = {"message": "m", "component": "c"}
    assert (await farm.post("/api/errors", body))[0] == 401
    status, err = await farm.post("/api/errors", body, headers={"Authorization": "Bearer wrong"})
    assert status == 401 and err["code"] == "unauthorized"
    assert (await farm.post("/api/errors", body, headers={"Authorization": "Basic s3cret"}))[0] == 401
    status, ok = await farm.post("/api/errors", body, headers={"Authorization": "Bearer s3cret"})
    assert status == 202
    for path in ("/api/recovery/reset", f"/api/errors/{ok['error_id']}/resolve"):
        assert (await farm.post(path))[0] == 401
        assert (await farm.post(path, headers={"Authorization": "Bearer s3cret"}))[0] == 200
    assert (await farm.get("/api/errors"))[0] == 200
    assert (await farm.get("/api/diagnostics"))[0] == 200


def mounted_routes(app: web.Application) -> set[tuple[str, str]]:
    mounted = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path and route.method != "HEAD":
            mounted.add((route.method.lower(), path))
    return mounted


async def test_openapi_documents_every_route(make_farm) -> None:
    """The plugin's routes and the reference coordinator's own, /metrics and the dashboard."""
    farm = await make_farm(plugin={"auto_recover": False})
    status, doc = await farm.get("/api/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert mounted_routes(farm.app) == documented
    assert {("post", "/api/tasks"), ("post", "/api/workers/register"), ("get", "/metrics")} <= documented
    assert not any("security" in op for ops in doc["paths"].values() for op in ops.values())  # no token set


async def test_openapi_declares_the_token_where_it_is_required(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False}, coordinator={"api_token": "tok"})
    doc = (await farm.get("/api/openapi.json"))[1]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert ("security" in op) == (method == "post"), (method, path)
            assert ("401" in op["responses"]) == (method == "post"), (method, path)
    farm2 = await make_farm(plugin={"auto_recover": False, "database": ":memory:"},
                            coordinator={"api_token": "tok", "protect_reads": True,
                                         "database": ":memory:"})
    status, _ = await farm2.get("/api/openapi.json")
    assert status == 401
    status, doc = await farm2.get("/api/openapi.json", headers={"Authorization": "Bearer tok"})
    assert status == 200
    assert all("security" in op for ops in doc["paths"].values() for op in ops.values())


async def test_head_answers_every_plugin_read_as_get_does(make_farm) -> None:
    """HEAD on each of the plugin's GET routes: GET's status and headers, no body; behind the
    token exactly when GET is (protect_reads)."""
    farm = await make_farm(plugin={"auto_recover": False, "database": ":memory:"},
                           coordinator={"api_token": "tok", "protect_reads": True, "database": ":memory:"})
    auth = {"Authorization": "Bearer tok"}
    status, posted = await farm.post("/api/errors", {"message": "disk 3 full", "component": "c"}, headers=auth)
    assert status == 202, posted
    error_id = posted["error_id"]
    reads = ["/api/errors", f"/api/errors/{error_id}", "/api/recovery/metrics", "/api/recovery/history",
             "/api/recovery/strategies", "/api/diagnostics", "/api/openapi.json"]
    for path in reads:
        async with farm.session.get(farm.url + path, headers=auth) as got:
            assert got.status == 200, path
            body = await got.read()
        async with farm.session.head(farm.url + path, headers=auth) as head:
            assert head.status == 200, path
            assert head.headers["Content-Type"] == got.headers["Content-Type"], path
            assert await head.read() == b"" and body, path
        async with farm.session.head(farm.url + path) as head:
            assert head.status == 401, path
    async with farm.session.head(farm.url + "/api/errors/nope", headers=auth) as head:
        assert head.status == 404


async def test_coordinator_serves_its_own_document_without_the_plugin(make_farm) -> None:
    farm = await make_farm(enabled=False)
    status, doc = await farm.get("/api/openapi.json")
    assert status == 200
    assert mounted_routes(farm.app) == {(m, p) for p, ops in doc["paths"].items() for m in ops}


async def test_unhandled_coordinator_errors_become_json_500_and_are_reported(tmp_path: Path) -> None:
    app = build_app(farm_config(tmp_path, {"auto_recover": False}))

    async def boom(request: web.Request) -> web.Response:
        raise KeyError("missing worker slot")

    app.router.add_get("/api/boom", boom)
    await assert_reported_500(app, "/api/boom", "missing worker slot")


async def assert_reported_500(app: web.Application, path: str, text: str) -> None:
    """GET ``path`` answers a JSON 500 naming the group its exception was reported to (component
    coordinator, operation the route, the exception's text in the message)."""
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s, s.get(server.make_url(path)) as r:
            assert r.status == 500
            body = await r.json()
        assert body["code"] == "internal_error" and body["error_id"]
        report = app[ERROR_HANDLING_KEY].error_handler.groups.get(body["error_id"])
        assert report.context.component == "coordinator" and report.context.operation == f"GET {path}"
        assert text in report.message
    finally:
        await server.close()


async def test_metrics_and_dashboard_with_two_apps_in_one_process(make_farm, tmp_path: Path) -> None:
    farm = await make_farm(plugin={"auto_recover": False})
    await post_error(farm)
    second = build_app(farm_config(tmp_path / "two" if (tmp_path / "two").mkdir() is None else tmp_path,
                                   {"auto_recover": False}))
    server = TestServer(second, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(farm.url + "/metrics") as r:
                text = await r.text()
            assert r.status == 200
            assert 'error_handling_errors_total{error_type="network",severity="medium"} 1.0' in text
            assert "error_handling_open_groups 1.0" in text
            async with s.get(server.make_url("/metrics")) as r:
                assert r.status == 200 and "error_handling_open_groups 0.0" in await r.text()
            async with s.get(farm.url + "/dashboard/errors") as r:
                html = await r.text()
            assert r.status == 200 and "Open error groups" in html and '"/api"' in html
    finally:
        await server.close()


async def test_no_route_runs_duckdb_on_the_event_loop(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False})
    import threading

    loop_thread = threading.get_ident()
    seen: list[int] = []
    store = farm.integ.store
    original = store.database.cursor  # every query's cursor comes from here

    def spy() -> Any:
        seen.append(threading.get_ident())
        return original()

    store.database.cursor = spy  # type: ignore[method-assign]
    await post_error(farm)
    for path in ("/api/errors", "/api/recovery/metrics", "/api/recovery/history", "/api/diagnostics"):
        assert (await farm.get(path))[0] == 200
    assert seen and loop_thread not in seen


@pytest.mark.parametrize("enabled", [True, False])
async def test_one_middleware_answers_errors_as_json_with_or_without_the_plugin(tmp_path: Path, enabled: bool) -> None:
    """With the plugin, its middleware is the app's only one (it answers JSON errors and reports
    unhandled exceptions; the coordinator adds no second layer, and the plugin's routes get their
    deadline from it, not from a wrapper of their own); without the plugin, the coordinator's own
    middleware gives the same JSON answers. Either way the token still guards the coordinator's
    routes, and a handler's exception is a JSON 500."""
    token = "t0ken-for-layers"
    app = build_app(farm_config(tmp_path, {"auto_recover": False}, {"api_token": token}, enabled))

    async def boom(request: web.Request) -> web.Response:
        raise KeyError("missing worker slot")

    app.router.add_get("/api/boom", boom)
    assert len(app.middlewares) == 1
    assert getattr(app.middlewares[0], "json_errors_prefix", None) == ("/api" if enabled else None)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            for method, path, status, code in [
                ("GET", "/api/no-such-route", 404, "not_found"),
                ("DELETE", "/api/tasks", 405, "method_not_allowed"),
                ("POST", "/api/tasks", 401, "unauthorized"),
                ("POST", "/api/workers/register", 401, "unauthorized"),
                ("GET", "/api/boom", 500, "internal_error"),
            ]:
                async with s.request(method, server.make_url(path), json={}) as r:
                    assert r.status == status, (method, path, r.status)
                    assert r.content_type == "application/json"
                    body = await r.json()
                    assert body["code"] == code, (method, path, body)
                    if status == 500:
                        assert ("error_id" in body and body["error_id"]) if enabled else "error_id" not in body
            async with s.get(server.make_url("/api/status")) as r:  # reads stay open
                assert r.status == 200
            async with s.post(server.make_url("/api/workers/register"), json={"worker_id": "w"},
                              headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200
    finally:
        await server.close()


async def test_an_exception_in_a_plugin_route_is_a_reported_json_500(tmp_path: Path, monkeypatch) -> None:
    """A plugin route runs under its deadline inside the plugin's middleware; an exception there
    is still reported (after the deadline is left) and answered with a JSON 500 naming its group."""
    from coordinator_plugins.error_handling.web import api

    async def broken(self: Any, request: web.Request) -> web.Response:
        raise RuntimeError("metrics table vanished")

    monkeypatch.setattr(api.ErrorRoutes, "recovery_metrics", broken)
    app = build_app(farm_config(tmp_path, {"auto_recover": False}))
    await assert_reported_500(app, "/api/recovery/metrics", "metrics table vanished")
