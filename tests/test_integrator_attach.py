"""Issue 28 items 3, 4 and 5: installing into a coordinator is never a quiet no-op.

3. A coordinator that builds its app in a local variable (the seed's current one) gets a WARNING at
   install naming the line to add, another on the first report that arrives unattached and one at
   exit; ``attached``, ``started`` and diagnostics say so; with the line added all seven of the
   seed's routes answer.
4. ``attach(app)`` on the app it is attached to returns the integration.
5. ``database`` pointing at the coordinator's own open DuckDB file is refused at install.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import duckdb
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from coordinator_plugins.error_handling import (
    ERROR_HANDLING_KEY,
    EnhancedErrorHandlingIntegration,
    install_enhanced_error_handling,
    setup,
)
from coordinator_plugins.error_handling.storage.base import StoreClosed, StoreUnavailable
from tests.seedlike import SEED_ROUTES, SeedLikeCoordinator

EH = "coordinator_plugins.error_handling"
ROOT = Path(__file__).resolve().parent.parent


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(EH) and r.levelno == logging.WARNING]


# -- 3: the seed's current coordinator ------------------------------------------------------------------
async def test_an_unattached_install_says_so_at_install_on_the_first_report_and_in_diagnostics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, EH)
    coord = SeedLikeCoordinator({"database": str(tmp_path / "eh.duckdb")}, wiring=None)
    integ = coord.enhanced_error_handling
    install = _warnings(caplog)
    assert len(install) == 1 and "`self.app = app`" in install[0] and "`integration.attach(app)`" in install[0]
    coord.start()
    try:
        async with aiohttp.ClientSession() as s:
            for method, path in SEED_ROUTES:  # as shipped: nothing mounted (aiohttp's plain 404)
                async with s.request(method, coord.url + path) as r:
                    assert r.status == 404, path
        assert (integ.attached, integ.started) == (False, False)
        caplog.clear()
        for _ in range(3):
            await integ.report_error(ConnectionResetError("peer reset"), {"component": "api"})
        said = _warnings(caplog)
        assert len(said) == 1 and said[0].startswith("a report arrived, but error handling is not attached")
        diag = await integ.run_diagnostics()
        assert diag["status"] == "critical" and diag["integration"] == {"attached": False, "started": False}
        assert "`self.app = app`" in diag["issues"][0]
        # every read that needs the store says the same, with the fix, whatever it is
        for read in (integ.get_performance_metrics(), integ.get_recovery_history(), integ.get_unresolved_errors()):
            with pytest.raises(StoreClosed, match=r"not attached to an app.*`self\.app = app`"):
                await read
    finally:
        coord.stop()


@pytest.mark.parametrize("wiring", ["self.app", "attach"])
async def test_with_the_line_the_readme_names_all_seven_seed_routes_answer(tmp_path: Path, wiring: str) -> None:
    coord = SeedLikeCoordinator({"database": str(tmp_path / "eh.duckdb"), "auto_recover": False}, wiring=wiring)
    integ = coord.enhanced_error_handling
    assert not integ.attached
    coord.start()
    try:
        assert coord.failure is None
        assert (integ.attached, integ.started) == (True, True)
        async with aiohttp.ClientSession() as s:
            for method, path in SEED_ROUTES:
                async with s.request(method, coord.url + path) as r:
                    body = await r.json()
                    # a JSON answer of the plugin's: 200, or its JSON 404 for the unknown id
                    assert r.status in (200, 404) and ("error" in body if r.status == 404 else True), path
                    if r.status == 404:
                        assert body["code"] == "not_found", (path, body)
            async with s.get(coord.url + "/api/diagnostics") as r:
                assert (await r.json())["integration"] == {"attached": True, "started": True}
    finally:
        coord.stop()


def test_an_install_never_attached_is_named_again_at_exit(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import logging
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        from coordinator_plugins.error_handling import install_enhanced_error_handling
        class Coordinator:
            pass
        c = Coordinator()
        install_enhanced_error_handling(c, {{"database": {str(tmp_path / "eh.duckdb")!r}}})
        print("done")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("WARNING")]
    assert len(lines) == 2, out.stderr
    assert lines[0].startswith("WARNING installed without an app")
    assert lines[1].startswith("WARNING at exit: error handling is not attached to an app")
    assert "`self.app = app`" in lines[1]


# -- 4: attach is idempotent on its own app ------------------------------------------------------------
def test_attach_on_the_app_it_is_attached_to_returns_the_integration(tmp_path: Path) -> None:
    class Coordinator:
        pass

    coord = Coordinator()
    integ = install_enhanced_error_handling(coord, {"database": str(tmp_path / "eh.duckdb")})
    coord.app = web.Application()  # type: ignore[attr-defined]  # attaches it (the seed's order)
    assert integ.attached and coord.app[ERROR_HANDLING_KEY] is integ  # type: ignore[attr-defined]
    routes = len(coord.app.router.routes())  # type: ignore[attr-defined]
    assert integ.attach(coord.app) is integ  # type: ignore[attr-defined]  # the natural call after it
    assert integ.attach(coord.app) is integ  # type: ignore[attr-defined]
    assert len(coord.app.router.routes()) == routes  # type: ignore[attr-defined]  # nothing mounted twice
    with pytest.raises(RuntimeError, match="already attached to another app"):
        integ.attach(web.Application())
    other = EnhancedErrorHandlingIntegration(None, {"database": ":memory:"})
    with pytest.raises(RuntimeError, match="already set up on this app"):
        other.attach(coord.app)  # type: ignore[attr-defined]


def test_setup_then_attach_returns_the_integration(tmp_path: Path) -> None:
    app = web.Application()
    integ = setup(app, None, {"database": str(tmp_path / "eh.duckdb")})
    assert integ.attach(app) is integ
    with pytest.raises(RuntimeError, match="already set up"):
        setup(app, None, {"database": ":memory:"})


# -- 5: the coordinator's own open DuckDB file ---------------------------------------------------------
def test_the_coordinators_own_open_duckdb_file_is_refused_at_install(tmp_path: Path) -> None:
    path = str(tmp_path / "coordinator.duckdb")

    class Coordinator:  # the seed's: its own DuckDB connection on its db_path, open for its life
        db = duckdb.connect(path)

    con = Coordinator.db
    try:
        with pytest.raises(ValueError, match=r"error_handling\.database: .* is the coordinator's own") as err:
            install_enhanced_error_handling(Coordinator(), {"database": path})
        assert "a file of its own" in str(err.value) and "copy the file" in str(err.value)
        app = web.Application()  # and by setup(), before anything is mounted
        with pytest.raises(ValueError, match=r"error_handling\.database"):
            setup(app, None, {"database": path})
        assert ERROR_HANDLING_KEY not in app and not app.router.routes()
    finally:
        con.close()
    # the seed's subclass opens its db_path only after the base class installed the plugin: the
    # path it names is refused all the same, before the coordinator's API thread ever starts
    other = str(tmp_path / "seed.duckdb")
    with pytest.raises(ValueError, match=r"error_handling\.database: .* is the coordinator's own database file"):
        SeedLikeCoordinator({"database": other}, wiring="self.app", db_path=other)
    # once the coordinator closed it, the same file is the plugin's to use
    integ = EnhancedErrorHandlingIntegration(None, {"database": path})
    assert integ.store.path == path


async def test_a_file_the_host_opens_after_install_fails_the_start_with_the_same_fix(tmp_path: Path) -> None:
    path = str(tmp_path / "coordinator.duckdb")
    app = web.Application()
    integ = setup(app, None, {"database": path})
    con = duckdb.connect(path)  # the host opens it between install and start
    server = TestServer(app, host="127.0.0.1")
    try:
        with pytest.raises(StoreUnavailable, match="is the coordinator's own database file") as err:
            await server.start_server()
        assert "a file of its own" in str(err.value)
        assert not integ.started
    finally:
        await server.close()
        con.close()


async def test_two_integrations_of_the_plugin_on_one_file_still_share_it(tmp_path: Path) -> None:
    path = str(tmp_path / "eh.duckdb")
    first = EnhancedErrorHandlingIntegration(None, {"database": path, "auto_recover": False})
    await first.start()
    try:
        second = EnhancedErrorHandlingIntegration(None, {"database": path, "auto_recover": False})
        assert second.store.path == path  # the plugin's own open file is not the host's
    finally:
        await first.stop()
