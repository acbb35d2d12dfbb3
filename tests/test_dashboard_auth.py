"""The dashboard and the token, in Debian's Chromium (docs/operations.md, Security; issue 28 item 7).

A link may carry the token in its fragment (``#token=...``): no server ever sees it (a browser
never sends the fragment), the page keeps it for the tab (``sessionStorage``) as if it had been
typed, and removes it from the address bar and the history entry. ``protect_reads`` covers the
page itself (a 401 that shows the prompt) and every read it makes."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.browser import chromium, needs_chromium

TOKEN = "s3cret/token+=&x"  # characters a fragment must carry percent-encoded
KEY = "coordinator_plugins.api_token"


async def _reported(farm: Any) -> str:
    status, body = await farm.post("/api/errors", {"message": "lost the lease", "component": "alpha"},
                                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 202, body
    return str(body["error_id"])


def _watch(page: Any) -> list[tuple[str, str, str | None]]:
    seen: list[tuple[str, str, str | None]] = []
    page.on("request", lambda req: seen.append((req.method, req.url, req.headers.get("authorization"))))
    return seen


@needs_chromium
async def test_a_token_link_is_kept_for_the_tab_and_leaves_the_address_bar(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "api_token": TOKEN, "protect_reads": True})
    error_id = await _reported(farm)
    async with chromium() as browser:
        page = await browser.new_page()
        seen = _watch(page)
        await page.goto(f"{farm.url}/dashboard/errors#token={quote(TOKEN, safe='')}")
        await page.wait_for_selector(f'#groups tr[data-error-id="{error_id}"]')
        assert await page.locator("#token-panel").is_hidden()  # never asked
        assert page.url == f"{farm.url}/dashboard/errors"  # gone from the address bar
        assert await page.evaluate("location.hash") == ""
        assert await page.evaluate(f"sessionStorage.getItem({KEY!r})") == TOKEN
        # no request carried it in a URL; every API call sent it as the bearer token
        assert all("token" not in url for _, url, _ in seen), seen
        api = [(m, u, a) for m, u, a in seen if "/api/" in u]
        assert api and all(a == f"Bearer {TOKEN}" for _, _, a in api), api
        await page.reload()  # kept for the tab
        await page.wait_for_selector(f'#groups tr[data-error-id="{error_id}"]')
        assert await page.locator("#token-panel").is_hidden()
        # the history entry was replaced, not added to: Back leaves the page, never to the token's URL
        await page.go_back()
        assert page.url == "about:blank"
        # another tab of the same browser does not have it: it asks
        other = await browser.new_page()
        await other.goto(f"{farm.url}/dashboard/errors")
        await other.wait_for_selector("#token-panel:not([hidden])")


@needs_chromium
async def test_a_token_link_to_a_group_opens_that_group(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "api_token": TOKEN, "protect_reads": True})
    error_id = await _reported(farm)
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(f"{farm.url}/dashboard/errors#/group/{error_id}&token={quote(TOKEN, safe='')}")
        await page.wait_for_selector("#resolve")
        assert await page.evaluate("location.hash") == f"#/group/{error_id}"
        assert await page.locator("#token-panel").is_hidden()
        await page.click("#resolve")  # a POST with the link's token
        await page.wait_for_function("document.querySelector('#resolve').textContent === 'Resolved'",
                                     timeout=30_000)
    _, group = await farm.get(f"/api/errors/{error_id}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert group["resolution_status"] == "resolved"


@needs_chromium
async def test_a_wrong_token_in_a_link_is_refused_and_asked_for(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "api_token": TOKEN, "protect_reads": True})
    await _reported(farm)
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(f"{farm.url}/dashboard/errors#token=wrong")
        await page.wait_for_function("document.querySelector('#token-reason').textContent.includes('refused')",
                                     timeout=30_000)
        assert page.url == f"{farm.url}/dashboard/errors"
        assert await page.evaluate(f"sessionStorage.getItem({KEY!r})") is None  # the refused one is dropped


async def test_protect_reads_covers_the_page_metrics_and_every_read(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "api_token": TOKEN, "protect_reads": True})
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with farm.session.get(farm.url + "/dashboard/errors", headers={"Accept": "text/html"}) as r:
        assert r.status == 401 and "token-panel" in await r.text()  # a browser gets the page (it asks)
    async with farm.session.get(farm.url + "/dashboard/errors") as r:  # any other client a JSON 401
        assert r.status == 401 and (await r.json())["code"] == "unauthorized"
    async with farm.session.get(farm.url + "/metrics") as r:
        assert r.status == 401
    async with farm.session.get(farm.url + "/metrics", headers=bearer) as r:
        assert r.status == 200
    for path in ("/api/errors", "/api/diagnostics", "/api/recovery/metrics", "/api/recovery/history",
                 "/api/recovery/strategies", "/api/timeline"):
        assert (await farm.get(path))[0] == 401, path
        assert (await farm.get(path, headers=bearer))[0] == 200, path
