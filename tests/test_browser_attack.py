"""Issue 26, item 1, in a real browser: Debian's Chromium, driven by Playwright, opens a page on
another origin (a second server, on another port) and a DNS-rebound page (a name Chromium is told
resolves to 127.0.0.1) while a coordinator with no token runs; neither page can run a command,
report an error, reset recovery or read the API. The dashboard's own requests still pass.

Before the fix the first page's ``fetch(..., {mode: "no-cors", body: Blob})`` ran a command on a
worker and the rebound page read every API (reproduced here)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from conftest import wait_for
from tests.browser import chromium, needs_chromium

ATTACK = """<!doctype html><html><body>
<iframe name="sink" id="sink"></iframe>
<form id="form" method="POST" target="sink" enctype="text/plain" action="__TARGET__/api/tasks">
<input type="hidden" id="field" value='"}'>
</form>
<script>
const target = "__TARGET__";
const marker = __MARKER__;
const results = {};
async function attempt(name, fn) {
  try { results[name] = await fn(); } catch (e) { results[name] = "failed: " + e.name; }
}
(async () => {
  const command = JSON.stringify({kind: "command", argv: ["touch", marker + "-blob"]});
  const post = (path, body, extra) => fetch(target + path, {method: "POST", mode: "no-cors", body, ...extra});
  await attempt("blob", async () => (await post("/api/tasks", new Blob([command]))).type);
  await attempt("text", async () => (await post("/api/tasks", JSON.stringify(
    {kind: "command", argv: ["touch", marker + "-text"]}), {headers: {"Content-Type": "text/plain"}})).type);
  await attempt("form", async () => (await post("/api/tasks", new URLSearchParams({kind: "sim"}))).type);
  await attempt("report", async () => (await post("/api/errors", JSON.stringify(
    {message: "from a page", component: "cross-site"}))).type);
  await attempt("reset", async () => (await post("/api/recovery/reset")).type);
  await attempt("json", async () => (await fetch(target + "/api/tasks", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: command})).status);
  await attempt("read_status", async () => (await fetch(target + "/api/status")).text());
  await attempt("read_errors", async () => (await fetch(target + "/api/errors")).text());
  // the classic form: a text/plain body that is JSON once its "=" is read as part of a string
  const field = document.getElementById("field");
  field.name = JSON.stringify({kind: "command", argv: ["touch", marker + "-form"]}).slice(0, -1) + ', "x": "';
  await new Promise(done => {
    document.getElementById("sink").onload = done;
    document.getElementById("form").submit();
  });
  window.attackDone = results;
})();
</script></body></html>"""

REBOUND = """<!doctype html><html><body><script>
const results = {};
(async () => {
  for (const [name, path, init] of [
      ["status", "/api/status", {}], ["errors", "/api/errors", {}], ["diagnostics", "/api/diagnostics", {}],
      ["task", "/api/tasks", {method: "POST", headers: {"Content-Type": "application/json"},
                              body: JSON.stringify({kind: "command", argv: ["touch", __MARKER__ + "-rebound"]})}],
      ["report", "/api/errors", {method: "POST", headers: {"Content-Type": "application/json"},
                                 body: JSON.stringify({message: "rebound", component: "rebound"})}]]) {
    try {
      const r = await fetch(path, init);
      results[name] = {status: r.status, body: await r.text()};
    } catch (e) { results[name] = {status: 0, body: e.name}; }
  }
  window.attackDone = results;
})();
</script></body></html>"""


# rebind.test resolves to the coordinator's address. Chromium's own Local Network Access checks
# would refuse the rebound page's requests here (Playwright's fulfilled page counts as public),
# so they are off: this browser stands for the browsers without them, and the server's Host
# check must hold alone.
REBINDING = ("--host-resolver-rules=MAP rebind.test 127.0.0.1",
             "--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests")


async def attacker_site(html: str) -> TestServer:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/attack.html", page)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def results_of(page: Any) -> dict[str, Any]:
    await page.wait_for_function("window.attackDone !== undefined", timeout=60_000)
    return dict(await page.evaluate("window.attackDone"))


@needs_chromium
async def test_a_page_on_another_origin_or_a_rebound_name_can_do_nothing(make_farm, tmp_path: Path) -> None:
    # touch may run (as allowed_commands would let it): only the browser checks stand in the way
    farm = await make_farm(plugin={"auto_recover": False}, coordinator={"allowed_commands": ["touch"]}, workers=1)
    status, known = await farm.post("/api/errors", {"message": "disk full on shelf 3", "component": "storage"})
    assert status == 202
    farm.integ.recovery_manager.state(known["error_id"]).level = 3  # a reset would put it back to 1
    marker = tmp_path / "ran"
    port = farm.server.port
    attacker = await attacker_site(ATTACK.replace("__TARGET__", farm.url).replace("__MARKER__", json.dumps(
        str(marker))))
    try:
        async with chromium(args=REBINDING) as browser:
            page = await browser.new_page()
            await page.goto(str(attacker.make_url("/attack.html")))
            sent = await results_of(page)
            # the page could not read anything: a cross-origin read without CORS fails in the browser
            assert sent["read_status"].startswith("failed") and sent["read_errors"].startswith("failed"), sent
            assert sent["json"].startswith("failed"), sent  # its preflight is never granted
            await wait_for(lambda: farm.coord.workers["worker-1"].polls > 2, 30, "the worker polled again")
            assert farm.coord.tasks == {}  # before issue 26 the Blob's command was queued, and ran

            # DNS rebinding: a page on rebind.test, which now resolves to the coordinator
            rebound = await browser.new_page()
            url = f"http://rebind.test:{port}"
            await rebound.route(url + "/rebound.html", lambda route: route.fulfill(
                status=200, content_type="text/html", body=REBOUND.replace("__MARKER__", json.dumps(str(marker)))))
            await rebound.goto(url + "/rebound.html")
            got = await results_of(rebound)
            for name, result in got.items():
                assert result["status"] == 421, (name, result)
                assert "host_not_allowed" in result["body"] and "workers_detail" not in result["body"], result
            response = await rebound.goto(url + "/dashboard/errors")
            assert response is not None and response.status == 421

            # Nothing the pages sent changed anything: no task, no report, no reset, no file.
            await wait_for(lambda: farm.coord.workers["worker-1"].polls > 2, 30, "the worker polled again")
            assert farm.coord.tasks == {}
            assert [g.error_id for g in farm.integ.error_handler.groups] == [known["error_id"]]
            assert farm.integ.recovery_manager.state(known["error_id"]).level == 3
            assert not [p for p in await asyncio.to_thread(tmp_path.iterdir) if p.name.startswith("ran")]

            # the dashboard's own requests pass, under a loopback name too
            dashboard = await browser.new_page()
            await dashboard.goto(f"http://localhost:{port}/dashboard/errors#/group/{known['error_id']}")
            await dashboard.wait_for_selector("#resolve")
            await dashboard.click("#resolve")
            await dashboard.wait_for_function("document.querySelector('#resolve').textContent === 'Resolved'",
                                              timeout=30_000)
    finally:
        await attacker.close()
    status, group = await farm.get(f"/api/errors/{known['error_id']}")
    assert group["resolution_status"] == "resolved"  # by the dashboard
