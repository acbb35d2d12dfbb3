"""Issue 26, item 1, at the HTTP level: what a web page could send (a "simple" cross-origin POST,
a cross-site Origin, a DNS-rebound Host) is refused on every route, enumerated from the app's
own router so that a route added later cannot escape the checks; what the dashboard, curl and
the workers send still passes. Real servers on ephemeral ports; nothing mocked."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from coordinator_plugins.error_handling import setup
from coordinator_plugins.guard import HostPolicy, allowed_hosts
from coordinator_plugins.reference import build_app

TASK = b'{"kind": "sim", "duration": 0}'
SAFE = ("GET", "HEAD")


def routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, a concrete path) of every route of ``app``: each path parameter filled in."""
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or re.sub(r"\{[^}]+\}", "x1", info.get("formatter", ""))
        assert path, route
        out.append((route.method, path))
    assert out
    return out


async def answer(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with session.request(method, url, **kw) as r:
        body = await r.json(content_type=None) if method != "HEAD" else None
        return r.status, body


async def assert_refused_from_a_browser(session: aiohttp.ClientSession, base: str, port: int,
                                        every: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Every route answers 421 for a foreign Host; every state-changing one 403 for a foreign
    Origin and 415 for a body sent as text/plain, form-encoded or without a Content-Type."""
    checked = set()
    for method, path in every:
        url = base + path
        status, body = await answer(session, method, url, headers={"Host": f"rebind.example:{port}"})
        assert status == 421, (method, path, status, body)
        assert body is None or body["code"] == "host_not_allowed"
        if method not in SAFE:
            status, body = await answer(session, method, url, data=TASK, headers={
                "Origin": "http://attacker.example:8000", "Content-Type": "application/json"})
            assert (status, body["code"]) == (403, "cross_origin"), (method, path, status, body)
            status, body = await answer(session, method, url, headers={"Origin": "null"})
            assert (status, body["code"]) == (403, "cross_origin"), (method, path, status, body)
            for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                          None):
                headers = {"Content-Type": ctype} if ctype else {}
                skip = () if ctype else ("Content-Type",)
                status, body = await answer(session, method, url, data=TASK, headers=headers,
                                            skip_auto_headers=skip)
                assert (status, body["code"]) == (415, "unsupported_media_type"), (method, path, ctype, body)
        checked.add((method, path))
    return checked


async def test_every_route_of_the_coordinator_and_the_plugin_refuses_what_a_page_sends(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": True}, coordinator={"allowed_commands": ["touch"]})
    checked = await assert_refused_from_a_browser(farm.session, farm.url, farm.server.port, routes(farm.app))
    # the plugin's routes and the coordinator's, POST and GET alike, were all among them
    assert {("POST", "/api/tasks"), ("POST", "/api/errors"), ("POST", "/api/recovery/reset"),
            ("POST", "/api/workers/register"), ("GET", "/api/status"), ("GET", "/api/errors"),
            ("GET", "/dashboard/errors"), ("GET", "/metrics")} <= checked
    assert farm.coord.tasks == {} and farm.coord.workers == {}
    assert not farm.integ.error_handler.groups  # nothing was reported, nothing recovered


async def test_every_route_of_a_coordinator_without_plugins_refuses_them(make_farm) -> None:
    farm = await make_farm(enabled=False, coordinator={"allowed_commands": ["touch"]})
    checked = await assert_refused_from_a_browser(farm.session, farm.url, farm.server.port, routes(farm.app))
    assert ("GET", "/api/openapi.json") in checked and farm.coord.tasks == {}


async def test_the_plugin_on_its_own_app_refuses_them_on_its_routes_and_leaves_the_hosts_alone(
        tmp_path: Path) -> None:
    """setup(app, None, cfg): the plugin knows no bind address; the connection's own is used."""
    app = web.Application()

    async def mine(request: web.Request) -> web.Response:
        return web.json_response({"mine": True})

    app.router.add_post("/mine", mine)
    host_routes = {("POST", "/mine")}
    integ = setup(app, None, {"database": str(tmp_path / "e.duckdb"), "auto_recover": False})
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        base = str(server.make_url("")).rstrip("/")
        async with aiohttp.ClientSession() as s:
            plugins = [r for r in routes(app) if r not in host_routes]
            checked = await assert_refused_from_a_browser(s, base, server.port, plugins)
            assert ("POST", "/api/errors") in checked
            # the host's own route is the host's business
            status, _ = await answer(s, "POST", base + "/mine", headers={"Host": "rebind.example"})
            assert status == 200
            # what a client of the plugin sends passes: JSON, an empty POST, curl's and aiohttp's forms
            status, body = await answer(s, "POST", base + "/api/errors", json={"message": "m", "component": "c"})
            assert status == 202
            for kw in ({}, {"skip_auto_headers": ("Content-Type",)}, {"data": b"", "headers": {
                    "Content-Type": "application/x-www-form-urlencoded"}}):
                assert (await answer(s, "POST", base + "/api/recovery/reset", **kw))[0] == 200, kw
            status, _ = await answer(s, "POST", base + f"/api/errors/{body['error_id']}/resolve",
                                     headers={"Origin": base, "Content-Type": "application/merge-patch+json"},
                                     data=b'{"resolution": "by hand"}')
            assert status == 200
        assert len(integ.error_handler.groups) == 1  # the one JSON report
    finally:
        await server.close()


def _local_address() -> str | None:
    """A non-loopback address of this machine, if it has one."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.254", 9))  # no packet is sent: this only picks the outgoing interface
        addr = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if addr.startswith("127.") else addr


async def test_hosts_the_server_answers_to(tmp_path: Path) -> None:
    """Loopback names and addresses, the address the connection reached, allowed_hosts; a
    wildcard bind names no host of its own. The plugin alone, bound to every address."""
    app = web.Application()
    setup(app, None, {"database": str(tmp_path / "e.duckdb"), "auto_recover": False,
                      "allowed_hosts": ["farm.example.com", ".lab.example", "10.9.8.7"]})
    server = TestServer(app, host="0.0.0.0")
    await server.start_server()
    port = server.port
    local = _local_address()
    try:
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{port}/api/diagnostics"
            for host, expect in [
                (f"127.0.0.1:{port}", 200), (f"localhost:{port}", 200), ("LOCALHOST.", 200),
                (f"app.localhost:{port}", 200), (f"[::1]:{port}", 200), ("127.8.0.1", 200),
                ("farm.example.com", 200), ("FARM.example.com:443", 200), ("a.lab.example", 200),
                ("lab.example", 200), ("10.9.8.7:80", 200),
                ("farm.example.com.evil.test", 421), ("xlab.example", 421), ("10.9.8.8", 421),
                (f"{local or '192.0.2.77'}:{port}", 421),  # an address, but not the one reached here
                ("", 421), ("a b", 421), ("[::1", 421), ("x:y:z", 421),
            ]:
                status, body = await answer(s, "GET", url, headers={"Host": host})
                assert status == expect, (host, status, body)
            if local is not None:  # reached at its own address: that address is its name
                status, _ = await answer(s, "GET", f"http://{local}:{port}/api/diagnostics")
                assert status == 200
    finally:
        await server.close()


async def test_allowed_hosts_star_allows_any_host_and_the_coordinator_shares_its_list(make_farm) -> None:
    farm = await make_farm(coordinator={"allowed_hosts": ["*"]})
    for path in ("/api/status", "/api/errors"):
        assert (await answer(farm.session, "GET", farm.url + path, headers={"Host": "anything.example"}))[0] == 200
    assert "*" in farm.integ.config.allowed_hosts
    named = await make_farm(coordinator={"allowed_hosts": ["farm.example.com"], "database": ":memory:"})
    assert named.integ.config.allowed_hosts == ("farm.example.com", "127.0.0.1")  # its own host too
    for path in ("/api/status", "/api/errors"):
        status, _ = await answer(named.session, "GET", named.url + path, headers={"Host": "farm.example.com"})
        assert status == 200, path
    status, body = await named.post("/api/errors", {"message": "m", "component": "c"},
                                    headers={"Host": "farm.example.com", "Origin": "http://farm.example.com"})
    assert status == 202, body


def test_allowed_hosts_is_checked_naming_the_key(tmp_path: Path) -> None:
    for bad in ("farm.example.com", ["farm.example.com:8080"], ["a b"], [""], [5], ["http://x"]):
        with pytest.raises(ValueError, match=r"^coordinator\.allowed_hosts: (expected a list|each entry)"):
            build_app({"coordinator": {"database": ":memory:", "allowed_hosts": bad}})
        with pytest.raises(ValueError, match=r"plugins\.error_handling\.allowed_hosts: (expected a list|each entry)"):
            setup(web.Application(), None, {"database": str(tmp_path / "x.duckdb"), "allowed_hosts": bad})
    assert allowed_hosts(["Farm.Example.COM.", "::1", "[::1]", "*", ".lab"], "k") == (
        "farm.example.com", "::1", "*", ".lab")
    assert HostPolicy(["*"]).any and not HostPolicy([], "0.0.0.0").names
