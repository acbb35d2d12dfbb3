"""Issue 12, findings 4, 5 and 7, and hostile input on every POST route of the plugin and of
the reference coordinator: a JSON 4xx naming the problem, strict JSON always, never a 500 and
never a recovery started by a client's bad body. Real servers, raw sockets where a client
library would not send what a hostile client does."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest

DEEP_ARRAY = b"[" * 10_000 + b"]" * 10_000
POSTS = [  # every POST route: the plugin's, then the coordinator's
    "/api/errors",
    "/api/errors/e1/resolve",
    "/api/recovery/reset",
    "/api/workers/register",
    "/api/workers/w1/heartbeat",
    "/api/workers/w1/poll",
    "/api/tasks",
    "/api/tasks/t1/result",
]
JSON = {"Content-Type": "application/json"}


def strict(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def groups(farm: Any) -> int:
    return len(farm.integ.error_handler.groups)


async def test_deep_nesting_is_a_400_on_every_post_route_and_starts_no_recovery(make_farm) -> None:
    """Finding 4: a 10,000-deep array was a 500 (RecursionError) and each 500 a recovery."""
    farm = await make_farm()  # the plugin's defaults: auto_recover on
    deep_object = b'{"message": "m", "component": "c", "metadata": ' + b'{"a": ' * 3000 + b"1" + b"}" * 3000 + b"}"
    for path in POSTS:
        for body in (DEEP_ARRAY, deep_object):
            async with farm.session.post(farm.url + path, data=body, headers=JSON) as r:
                answer = strict(await r.text())
                assert r.status == 400, (path, r.status, answer)
                assert answer["code"] == "too_deep" and "nested deeper" in answer["error"]
    assert groups(farm) == 0  # nothing was reported: no coordinator error, no recovery
    assert not farm.integ.recovery_manager.levels


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400", b"9" * 5000])
async def test_non_finite_numbers_are_refused(make_farm, number: bytes) -> None:
    """Finding 5: NaN and Infinity in metadata were accepted and sent back as invalid JSON."""
    farm = await make_farm(plugin={"auto_recover": False})
    body = b'{"message": "m", "component": "c", "metadata": {"x": ' + number + b"}}"
    async with farm.session.post(farm.url + "/api/errors", data=body, headers=JSON) as r:
        answer = strict(await r.text())
    assert r.status == 400 and answer["code"] == "invalid_number", answer
    assert groups(farm) == 0
    for path in POSTS[3:]:  # the coordinator's routes refuse them as well
        async with farm.session.post(farm.url + path, data=b'{"wait": ' + number + b"}", headers=JSON) as r:
            assert r.status == 400 and strict(await r.text())["code"] == "invalid_number", path


async def test_no_response_carries_nan(make_farm) -> None:
    """Finding 5, the other half: whatever a response holds, it is strict JSON."""
    farm = await make_farm(plugin={"auto_recover": False})
    # A report made in code may carry NaN; the answers about it must still be strict JSON.
    report = await farm.integ.report_error("nan report", {"component": "c", "metadata": {"x": math.nan}})
    farm.integ.recovery_manager.state(report.error_id).level = 2
    paths = ["/api/errors", f"/api/errors/{report.error_id}", "/api/diagnostics", "/api/recovery/metrics",
             "/api/recovery/history", "/api/recovery/strategies", "/api/status", "/api/openapi.json"]
    for path in paths:
        async with farm.session.get(farm.url + path) as r:
            text = await r.text()
        assert r.status in (200, 404), (path, r.status)
        strict(text)  # refuses NaN, Infinity and -Infinity
    from coordinator_plugins.httpio import dumps

    assert strict(dumps({"a": [math.nan, math.inf, -math.inf, 1.5]})) == {"a": [None, None, None, 1.5]}


async def test_reset_with_a_null_error_id_is_a_400_and_resets_nothing(make_farm) -> None:
    """Finding 7: {"error_id": null} reset every group."""
    farm = await make_farm(plugin={"auto_recover": False})
    report = await farm.integ.report_error("x failed", {"component": "c"})
    farm.integ.recovery_manager.state(report.error_id).level = 4
    status, answer = await farm.post("/api/recovery/reset", {"error_id": None})
    assert status == 400 and answer["code"] == "invalid_field" and "error_id" in answer["error"]
    assert farm.integ.recovery_manager.levels[report.error_id].level == 4
    assert (await farm.post("/api/recovery/reset", {}))[1]["reset"] == 1  # an empty body still resets all


async def test_resolve_with_null_details_is_a_400(make_farm) -> None:
    """Finding 7: {"details": null} was accepted although the document says object."""
    farm = await make_farm(plugin={"auto_recover": False})
    report = await farm.integ.report_error("x failed", {"component": "c"})
    for body in ({"details": None}, {"resolution": None}, {"details": [1]}):
        status, answer = await farm.post(f"/api/errors/{report.error_id}/resolve", body)
        assert status == 400, (body, answer)
    assert report.is_open
    status, answer = await farm.post(f"/api/errors/{report.error_id}/resolve", {"details": {"by": "me"}})
    assert status == 200 and answer["already_resolved"] is False


async def test_an_empty_cursor_is_the_first_page_as_the_document_says(make_farm) -> None:
    """Finding 7: cursor= was refused though the schema allowed it; now they agree both ways."""
    import re

    farm = await make_farm(plugin={"auto_recover": False})
    for i in range(3):
        await farm.integ.report_error(f"failure {'abc'[i]}", {"component": "c"})
    status, first = await farm.get("/api/errors?cursor=")
    assert status == 200 and len(first["errors"]) == 3
    doc = (await farm.get("/api/openapi.json"))[1]
    param = next(p for p in doc["paths"]["/api/errors"]["get"]["parameters"] if p["name"] == "cursor")
    pattern = param["schema"]["pattern"]
    assert re.search(pattern, "")
    status, page = await farm.get("/api/errors?limit=2")
    cursor = page["next_cursor"]
    assert re.search(pattern, cursor)
    status, rest = await farm.get(f"/api/errors?limit=2&cursor={cursor}")
    assert status == 200 and len(rest["errors"]) == 1
    for garbage in ("h", "zz", cursor + "0"):
        assert not re.search(pattern, garbage)
        assert (await farm.get(f"/api/errors?cursor={garbage}"))[0] == 400


async def test_a_405_keeps_its_allow_header(make_farm) -> None:
    """Finding 7: the plugin's middleware dropped Allow when it made the 405 JSON."""
    farm = await make_farm(plugin={"auto_recover": False})
    for method, path, allowed in (("DELETE", "/api/errors", {"GET", "POST"}), ("PUT", "/api/recovery/reset", {"POST"}),
                                  ("DELETE", "/api/tasks", {"POST"}), ("PATCH", "/api/status", {"GET"})):
        async with farm.session.request(method, farm.url + path) as r:
            answer = strict(await r.text())
            assert r.status == 405 and answer["code"] == "method_not_allowed", (method, path)
            assert allowed <= {m.strip() for m in r.headers.get("Allow", "").split(",")}, (path, r.headers)


async def slow_chunked_post(port: int, path: str, seconds: float) -> tuple[bytes, bool]:
    """POST a chunked body one byte at a time, 5 a second, for up to ``seconds``; return what
    the server answered and whether it closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n".encode())
    await writer.drain()
    answer = b""
    closed = False
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    try:
        while loop.time() < end:
            try:
                async with asyncio.timeout(0.2):
                    data = await reader.read(4096)
                if not data:
                    closed = True
                    break
                answer += data
            except TimeoutError:
                pass
            try:
                writer.write(b"1\r\n \r\n")
                await writer.drain()
            except (ConnectionError, OSError):
                closed = True
                break
    finally:
        writer.close()
    return answer, closed


async def test_a_body_that_never_ends_gets_a_408_and_the_connection_closed(make_farm) -> None:
    """Finding 7: a chunked body sent 1 byte/s held a connection forever; body reads now have
    a deadline (plugin and coordinator), after which the answer is a 408 and the connection
    is closed (aiohttp lingers at most 10 s reading what is still sent)."""
    farm = await make_farm(plugin={"auto_recover": False, "body_timeout": 0.5}, coordinator={"body_timeout": 0.5})
    port = farm.server.port
    results = await asyncio.gather(*(slow_chunked_post(port, path, 60) for path in ("/api/errors", "/api/tasks")))
    for answer, closed in results:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"code": "body_timeout"' in answer
        assert closed
    assert groups(farm) == 0


HOSTILE: list[tuple[str, bytes, dict[str, str], int]] = [
    ("huge body", b'{"message": "' + b"x" * (1024 * 1024 + 10) + b'", "component": "c"}', JSON, 413),
    ("text/plain", b'{"message": "m", "component": "c"}', {"Content-Type": "text/plain"}, 415),
    ("form", b"message=m&component=c", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ("not UTF-8", b'{"message": "\xff\xfe", "component": "c"}', JSON, 400),
    ("not JSON", b"{'message': 'x'", JSON, 400),
    ("an array", b"[1, 2]", JSON, 400),
    ("a huge integer", b'{"message": "m", "component": "c", "metadata": {"n": ' + b"9" * 5000 + b"}}", JSON, 400),
]


@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize(("name", "body", "headers", "expect"), HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_hostile_bodies_on_every_post_route(make_farm, path: str, name: str, body: bytes,
                                                  headers: dict[str, str], expect: int) -> None:
    farm = await make_farm()
    async with farm.session.post(farm.url + path, data=body, headers=headers) as r:
        text = await r.text()
        assert r.status == expect, (name, path, r.status, text[:300])
        assert r.content_type == "application/json"
    assert strict(text)["code"]
    assert groups(farm) == 0


async def test_nul_bytes_and_surrogates_on_the_coordinators_routes(make_farm) -> None:
    """A lone surrogate is valid JSON but no text: the coordinator's own database would refuse
    the row and stop writing, so it is refused at the door (the plugin's intake is its store's)."""
    farm = await make_farm(plugin={"auto_recover": False}, coordinator={"allowed_commands": ["/bin/echo"]})
    cases = [("/api/tasks", b'{"kind": "sim", "message": "bad \\ud800 x"}'),
             ("/api/tasks", b'{"kind": "sim", "tag\\udfff": 1}'),
             ("/api/tasks", b'{"kind": "command", "argv": ["/bin/echo", "a\\u0000b"]}'),
             ("/api/workers/register", b'{"worker_id": "w\\u0000"}'),
             ("/api/workers/register", b'{"worker_id": "w", "capabilities": {"gpu": "\\udc00"}}')]
    for path, body in cases:
        async with farm.session.post(farm.url + path, data=body, headers=JSON) as r:
            assert r.status == 400, (path, body, await r.text())
    assert farm.coord.tasks == {} and farm.coord.workers == {}
    # NUL inside an ordinary string is data: a sim task's message may hold it.
    status, _ = await farm.post("/api/tasks", {"kind": "sim", "message": "a\u0000b", "duration": 0})
    assert status == 201
    await farm.coord.db.flush()
    assert farm.coord.db.ok


async def test_every_error_answer_is_json_with_a_code(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False})
    cases = [("GET", "/api/nowhere", 404), ("GET", "/api/tasks/none", 404), ("POST", "/api/workers/none/poll", 404),
             ("GET", "/api/errors/none", 404), ("POST", "/api/tasks/none/result", 400)]
    for method, path, expect in cases:
        async with farm.session.request(method, farm.url + path, json={} if method == "POST" else None) as r:
            assert r.status == expect and r.content_type == "application/json", (method, path, r.status)
            assert strict(await r.text())["code"]
