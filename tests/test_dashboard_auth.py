"""Issue 12: the dashboard under protect_reads, in a real browser (Debian's Chromium driven by
Playwright): it asks for the token once, keeps it for the tab (sessionStorage, never
localStorage nor the address bar), asks again when the token is refused, and shows the groups."""

from __future__ import annotations

import re
import shutil

import pytest

playwright = pytest.importorskip("playwright.async_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
TOKEN = "dash-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_the_dashboard_asks_for_the_token_once_per_tab(make_farm) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "protect_reads": True}, coordinator={"api_token": TOKEN})
    ids = set()
    for comp in ("alpha", "beta"):
        status, body = await farm.post("/api/errors", {"message": f"{comp} lost its disk", "component": comp},
                                       headers=AUTH)
        assert status == 202
        ids.add(body["error_id"])
    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            context = await browser.new_context()
            page = await context.new_page()
            response = await page.goto(farm.url + "/dashboard/errors")
            assert response is not None and response.status == 401  # the page itself, asking
            login = page.locator("#login")
            await login.wait_for(state="visible", timeout=20_000)
            assert await page.locator("#groups tbody tr").count() == 0
            await page.fill("#token", "wrong")
            await page.click("#login button")
            await page.wait_for_function(
                "document.getElementById('login-error').textContent.includes('refused')", timeout=20_000)
            await page.fill("#token", TOKEN)
            await page.click("#login button")
            await page.wait_for_function("document.querySelectorAll('#groups tbody tr').length === 2",
                                         timeout=20_000)
            shown = set(re.findall(r"[0-9a-f]{32}", await page.inner_text("#groups")))
            assert shown == ids and await login.is_hidden()
            # Kept for the tab: a reload shows the groups without asking.
            await page.reload()
            await page.wait_for_function("document.querySelectorAll('#groups tbody tr').length === 2",
                                         timeout=20_000)
            assert await login.is_hidden()
            assert await page.evaluate("localStorage.length") == 0 and TOKEN not in page.url
            # Another tab has its own sessionStorage: it asks again.
            other = await context.new_page()
            await other.goto(farm.url + "/dashboard/errors")
            await other.locator("#login").wait_for(state="visible", timeout=20_000)
            # A link may carry the token in its fragment; it is taken out of the address bar.
            third = await context.new_page()
            await third.goto(farm.url + f"/dashboard/errors#token={TOKEN}")
            await third.wait_for_function("document.querySelectorAll('#groups tbody tr').length === 2",
                                          timeout=20_000)
            assert TOKEN not in third.url
        finally:
            await browser.close()
