"""Issue 16: the dashboard as an operator's page, its read-only routes, and the page in Debian's
Chromium (charts that update, a page per group, resolve and reset with the token)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from conftest import wait_for
from coordinator_plugins.error_handling import setup
from coordinator_plugins.error_handling.web.openapi import document
from tests.browser import chromium, needs_chromium

TOKEN = "s3cret-token"


async def report(farm: Any, n: int = 1, **body: Any) -> str:
    error_id = ""
    for _ in range(n):
        status, data = await farm.post("/api/errors", {"message": "Connection reset by peer", "component": "alpha",
                                                       **body})
        assert status == 202, data
        error_id = data["error_id"]
    return error_id


async def timeline_total(farm: Any, **kw: Any) -> int:
    status, tl = await farm.get("/api/timeline", **kw)
    assert status == 200, tl
    return int(tl["totals"]["errors"])


# -- the routes ---------------------------------------------------------------------------------
async def test_timeline_counts_errors_and_recoveries_by_outcome(make_farm) -> None:
    farm = await make_farm(plugin={"builtin_strategies": ["retry"]})
    await report(farm, 3, error_type="network")
    await report(farm, 2, message="disk quota exceeded", component="beta", error_type="resource")
    deadline = asyncio.get_running_loop().time() + 20
    while await timeline_total(farm) < 5:
        assert asyncio.get_running_loop().time() < deadline, "the timeline never counted the 5 errors"
        await asyncio.sleep(0.2)
    status, tl = await farm.get("/api/timeline", params={"window": "300"})
    assert status == 200
    assert set(tl["errors_per_second"]) == {"network", "resource"}
    assert round(sum(tl["errors_per_second"]["network"]) * tl["step_seconds"]) == 3
    assert len(tl["open_groups"]) == tl["buckets"] and set(tl["recoveries"]) == {
        "succeeded", "failed", "nothing_applicable", "budget_deferred"}
    _, tl = await farm.get("/api/timeline")
    # retry finds no operation to re-run: nothing applies, so no recovery starts (it would cost a
    # pass for nothing), and the page says so
    assert farm.integ.recovery_manager.recoveries == 0
    assert [w["code"] for w in tl["warnings"]] == ["nothing_applicable"]
    assert "no registered strategy applies to network, resource errors" in tl["warnings"][0]["text"]
    assert len(tl["recovery_points"]) == sum(tl["totals"]["recoveries"].values())


async def test_timeline_and_occurrences_validate_their_queries(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False})
    error_id = await report(farm)
    for path, params in (("/api/timeline", {"window": "59"}), ("/api/timeline", {"window": "x"}),
                         ("/api/timeline", {"window": "3601"}),
                         (f"/api/errors/{error_id}/occurrences", {"buckets": "0"}),
                         (f"/api/errors/{error_id}/occurrences", {"buckets": "501"}),
                         (f"/api/errors/{error_id}/occurrences", {"window": "-1"})):
        status, body = await farm.get(path, params=params)
        assert status == 400 and body["code"] in ("invalid_field", "out_of_range"), (path, params, body)
    status, body = await farm.get("/api/errors/" + "f" * 32 + "/occurrences")
    assert status == 404 and body["code"] == "not_found"
    status, body = await farm.get("/api/errors/" + "x" * 80 + "/occurrences")
    assert status == 404


async def test_occurrences_of_a_group_come_from_the_database(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False})
    error_id = await report(farm, 7)
    await report(farm, 2, component="other")
    status, occ = await farm.get(f"/api/errors/{error_id}/occurrences", params={"buckets": "30"})
    assert status == 200, occ
    assert occ["total"] == sum(occ["counts"]) == 7
    assert 1 <= len(occ["counts"]) <= 30 and occ["step_seconds"] in (1, 2, 5, 10)
    status, last = await farm.get(f"/api/errors/{error_id}/occurrences", params={"window": "120", "buckets": "12"})
    assert status == 200 and last["step_seconds"] in (10, 15) and len(last["counts"]) <= 12 and last["total"] == 7


async def test_history_keeps_each_attempts_decision_and_the_recoverys_targets(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "builtin_strategies": ["retry", "worker"]})
    _ok, info = await farm.integ.handle_error("heartbeat lost", {"component": "worker", "worker_id": "ghost-7",
                                                                "task_id": "t-1"})
    assert info["targets"] == {"workers": ["ghost-7"], "tasks": ["t-1"]}
    status, group = await farm.get(f"/api/errors/{info['error_id']}")
    assert status == 200
    recovery = group["recovery_history"][-1]
    assert recovery["targets"] == {"workers": ["ghost-7"], "tasks": ["t-1"]}
    for attempt in recovery["attempts"]:
        assert attempt["reason"] and attempt["policy"] == "adaptive" and 0 <= attempt["probability"] <= 1


async def test_new_routes_need_the_token_when_reads_are_protected(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "api_token": TOKEN, "protect_reads": True})
    status, _ = await farm.post("/api/errors", {"message": "m", "component": "c"},
                                headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 202
    error_id = farm.integ.error_handler.groups.open_groups()[0].error_id
    for path in ("/api/timeline", f"/api/errors/{error_id}/occurrences"):
        status, body = await farm.get(path)
        assert status == 401 and body["code"] == "unauthorized", path
        status, body = await farm.get(path, headers={"Authorization": "Bearer wrong"})
        assert status == 401
        status, body = await farm.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200, body
    # without the token a browser gets the page (which asks for it) as a 401, other clients a JSON
    # 401; the page's scripts hold no data and load
    async with farm.session.get(farm.url + "/dashboard/errors", headers={"Accept": "text/html"}) as r:
        assert r.status == 401 and '"protectReads": true' in await r.text()
    status, body = await farm.get("/dashboard/errors")
    assert status == 401 and body["code"] == "unauthorized"
    async with farm.session.get(farm.url + "/dashboard/errors", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 200
    async with farm.session.get(farm.url + "/dashboard/errors/assets/dashboard.js") as r:
        assert r.status == 200


async def test_page_assets_are_served_from_the_package(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False})
    async with farm.session.get(farm.url + "/dashboard/errors") as r:
        html = await r.text()
    assert r.status == 200 and r.content_type == "text/html"
    assert '"api": "/api"' in html and "/dashboard/errors/assets/dashboard.js" in html
    assert "http://" not in html and "https://" not in html  # nothing fetched from elsewhere
    for name, ctype in (("dashboard.js", "application/javascript"), ("group.js", "application/javascript"),
                        ("charts.js", "application/javascript"),
                        ("dashboard.css", "text/css")):
        async with farm.session.get(farm.url + f"/dashboard/errors/assets/{name}") as r:
            text = await r.text()
        assert r.status == 200 and r.content_type == ctype and len(text) > 1000
        assert "https://" not in text and "http://" not in text.replace('"http://www.w3.org/2000/svg"', "")
    for path in ("/dashboard/errors/assets/../../etc/passwd", "/dashboard/errors/assets/%2e%2e%2fapi.py"):
        async with farm.session.get(farm.url + path) as r:
            assert r.status == 404, path
    status, body = await farm.get("/dashboard/errors/assets/nope.js")
    assert status == 404 and body["code"] == "not_found"


def test_openapi_documents_the_dashboard_routes() -> None:
    paths = document("/api")["paths"]
    tl = paths["/api/timeline"]["get"]
    assert [p["name"] for p in tl["parameters"]] == ["window"] and {"200", "400"} <= set(tl["responses"])
    assert "401" not in tl["responses"]  # no token: none is needed
    occ = paths["/api/errors/{error_id}/occurrences"]["get"]
    assert [p["name"] for p in occ["parameters"]] == ["error_id", "buckets", "window"]
    assert {"200", "400", "404"} <= set(occ["responses"])
    protected = document("/api", True, True)["paths"]  # a token, and reads protected
    for path in ("/api/timeline", "/api/errors/{error_id}/occurrences"):
        op = protected[path]["get"]
        assert "401" in op["responses"] and "security" in op, path


# -- the page in a browser ----------------------------------------------------------------------
def _watch_requests(page: Any, base: str) -> list[tuple[str, str, str | None]]:
    seen: list[tuple[str, str, str | None]] = []
    page.on("request", lambda req: seen.append((req.method, req.url, req.headers.get("authorization"))))
    return seen


@needs_chromium
async def test_dashboard_charts_update_and_a_group_is_resolved_from_its_page(make_farm, tmp_path: Path) -> None:
    farm = await make_farm(plugin={"auto_recover": False})
    first = await report(farm, 3, error_type="network")
    await report(farm, 2, message="schema mismatch in table runs", component="beta", error_type="database")
    async with chromium() as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        seen = _watch_requests(page, farm.url)
        await page.goto(farm.url + "/dashboard/errors")
        await page.wait_for_selector("#groups tbody tr[data-error-id]")
        assert await page.locator("#groups tbody tr").count() == 2
        await page.wait_for_function("Number(document.querySelector('#chart-errors').dataset.total) >= 5",
                                     timeout=30_000)
        assert await page.locator("#recovery-pill").is_hidden()  # nothing keeps recovery from acting here
        banner = page.locator('#banners [data-code="auto_recover_off"]')
        assert "Automatic recovery is off" in await banner.inner_text()
        assert await page.locator(f'#groups a[title="{first}"]').inner_text() == first[:8]
        # more errors arrive: the charts and the table follow without a reload
        await report(farm, 4, error_type="network")
        await page.wait_for_function("Number(document.querySelector('#chart-errors').dataset.total) >= 9",
                                     timeout=30_000)
        assert int(await page.locator("#chart-errors").get_attribute("data-marks") or 0) >= 1
        row = page.locator(f'#groups tr[data-error-id="{first}"] td.num').first
        await page.wait_for_function(
            f"document.querySelector('#groups tr[data-error-id=\"{first}\"] td.num').textContent === '7'",
            timeout=30_000)
        assert await row.inner_text() == "7"
        await page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)

        await page.click(f'#groups a[title="{first}"]')
        await page.wait_for_selector("#resolve")
        assert first in await page.locator(".group-head").inner_text()
        await page.wait_for_function("document.querySelector('#chart-occurrences').dataset.total === '7'",
                                     timeout=30_000)
        await page.click("#resolve")
        await page.wait_for_function("document.querySelector('#resolve').textContent === 'Resolved'",
                                     timeout=30_000)
        assert await page.locator("#resolve").is_disabled()
        assert "Resolved by hand." in await page.locator("#action-note").inner_text()
        _status, group = await farm.get(f"/api/errors/{first}")
        assert group["resolution_status"] == "resolved"

        await page.click("text=← all error groups")
        await page.wait_for_function(
            f"!document.querySelector('#groups tr[data-error-id=\"{first}\"]') && "
            "document.querySelectorAll('#groups tbody tr').length === 1", timeout=30_000)
        assert errors == []
        assert all(url.startswith(farm.url) for _, url, _ in seen), [u for _, u, _ in seen]


@needs_chromium
async def test_protected_reads_ask_for_the_token_once_per_tab_and_send_it_on_every_call(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "api_token": TOKEN, "protect_reads": True})
    status, body = await farm.post("/api/errors", {"message": "lost the lease", "component": "alpha"},
                                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 202
    error_id = body["error_id"]
    async with chromium() as browser:
        page = await browser.new_page()
        seen = _watch_requests(page, farm.url)
        await page.goto(farm.url + "/dashboard/errors")
        await page.wait_for_selector("#token-panel:not([hidden])")
        await page.fill("#token-input", "wrong")
        await page.click("#token-panel button[type=submit]")
        await page.wait_for_function("document.querySelector('#token-reason').textContent.includes('refused')",
                                     timeout=30_000)
        await page.fill("#token-input", TOKEN)
        await page.click("#token-panel button[type=submit]")
        await page.wait_for_selector(f'#groups tr[data-error-id="{error_id}"]')
        assert await page.locator("#token-panel").is_hidden()
        await page.reload()  # the same tab keeps the token
        await page.wait_for_selector(f'#groups tr[data-error-id="{error_id}"]')
        assert await page.locator("#token-panel").is_hidden()
        await page.goto(farm.url + f"/dashboard/errors#/group/{error_id}")
        await page.wait_for_selector("#reset")
        await page.click("#reset")
        await page.wait_for_function("document.querySelector('#action-note').textContent.startsWith('Recovery level')"
                                     " || document.querySelector('#action-note').textContent === 'Nothing to reset.'",
                                     timeout=30_000)
        await page.click("#resolve")
        await page.wait_for_function("document.querySelector('#resolve').textContent === 'Resolved'",
                                     timeout=30_000)
    api_calls = [(m, u, a) for m, u, a in seen if "/api/" in u]
    token_at = next(i for i, (_, _, a) in enumerate(api_calls) if a == f"Bearer {TOKEN}")
    after = api_calls[token_at:]
    assert after and all(a == f"Bearer {TOKEN}" for _, _, a in after), after
    assert {m for m, _, _ in after} == {"GET", "POST"}
    _status, group = await farm.get(f"/api/errors/{error_id}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert group["resolution_status"] == "resolved"


@needs_chromium
async def test_a_token_for_posts_only_is_asked_for_when_an_action_needs_it(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "api_token": TOKEN})
    _, body = await farm.post("/api/errors", {"message": "m", "component": "c"},
                              headers={"Authorization": f"Bearer {TOKEN}"})
    error_id = body["error_id"]
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(farm.url + f"/dashboard/errors#/group/{error_id}")
        await page.wait_for_selector("#resolve")
        assert await page.locator("#token-panel").is_hidden()  # reading needs no token here
        await page.click("#resolve")
        await page.wait_for_selector("#token-panel:not([hidden])")
        await page.fill("#token-input", TOKEN)
        await page.click("#token-panel button[type=submit]")
        await page.wait_for_function("document.querySelector('#resolve').textContent === 'Resolved'",
                                     timeout=30_000)
    _status, group = await farm.get(f"/api/errors/{error_id}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert group["resolution_status"] == "resolved"


@needs_chromium
async def test_the_page_warns_when_recovery_has_no_coordinator_to_act_through(tmp_path: Path) -> None:
    app = web.Application()
    setup(app, None, {"database": str(tmp_path / "e.duckdb"), "escalation_backoff": 0.0})
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        async with aiohttp.ClientSession() as s:
            async with s.post(url + "/api/errors", json={"message": "worker w1 lost", "component": "worker",
                                                         "worker_id": "w1"}) as r:
                assert r.status == 202
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(url + "/dashboard/errors")
            banner = page.locator('#banners [data-code="no_coordinator"]')
            await banner.wait_for()
            assert "No coordinator" in await banner.inner_text()
            assert "Recovery cannot act." in await banner.inner_text()
            assert await page.locator("#recovery-pill").inner_text() == "recovery cannot act"
    finally:
        await server.close()
