"""Issue 14 (lifecycles) and issue 12 finding 6 (a database file deleted or replaced while open).

Real aiohttp servers, real DuckDB files in temp dirs, a second process to check the file lock.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration, setup, validate_config
from tests.store_harness import DuckDBKind


def opens_in_another_process(path: Path) -> subprocess.CompletedProcess[str]:
    code = "import duckdb, sys; duckdb.connect(sys.argv[1]).close()"
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "eh-store-writer" and t.is_alive()]


async def test_a_start_that_fails_after_the_store_opened_closes_it(tmp_path: Path) -> None:
    path = tmp_path / "eh.duckdb"
    before = len(writer_threads())
    integ = EnhancedErrorHandlingIntegration(None, validate_config({"database": str(path), "auto_recover": False}))

    def broken_restore(state: Any) -> None:
        raise RuntimeError("restoring failed")

    integ._restore = broken_restore  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="restoring failed"):
        await integ.start()
    deadline = time.monotonic() + 30
    while len(writer_threads()) > before and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(writer_threads()) == before  # the writer thread was stopped
    done = await asyncio.to_thread(opens_in_another_process, path)
    assert done.returncode == 0, done.stderr  # and the connection closed: the file is not locked
    assert not integ.started


async def test_a_damaged_stored_row_is_skipped_counted_and_shown(tmp_path: Path) -> None:
    path = tmp_path / "eh.duckdb"
    cfg = {"database": str(path), "auto_recover": False}
    integ = EnhancedErrorHandlingIntegration(None, validate_config(cfg))
    await integ.start()
    good = await integ.report_error("peer reset by the results db", {"component": "a"})
    bad = await integ.report_error("disk quota exceeded on /scratch", {"component": "b"})
    await integ.stop()
    kind = DuckDBKind(tmp_path)
    kind.path = str(path)
    kind.damage_group(bad.error_id)
    again = EnhancedErrorHandlingIntegration(None, validate_config(cfg))
    await again.start()  # never fatal
    try:
        assert again.error_handler.groups.get(good.error_id) is not None
        assert again.error_handler.groups.get(bad.error_id) is None
        diag = await again.run_diagnostics()
        assert diag["status"] == "degraded" and diag["database"]["skipped_rows"] == 1
        assert any("1 stored row(s) could not be read" in i for i in diag["issues"])
        assert await again.resolve_error(bad.error_id) is False  # unreadable: as unknown, not a crash
    finally:
        await again.stop()


@asynccontextmanager
async def served(path: Path) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    app = web.Application()
    setup(app, None, {"database": str(path), "auto_recover": False, "metrics": False})
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            yield s, str(server.make_url("/api")).rstrip("/")
    finally:
        await server.close()  # the plugin stops and flushes


async def post_reports(s: aiohttp.ClientSession, url: str, tag: str, n: int) -> dict[str, int]:
    acked: dict[str, int] = {}
    for i in range(n):
        body = {"message": f"{tag} failure kind {chr(97 + i % 10)}", "component": f"{tag}-{i % 10}"}
        async with s.post(url + "/errors", json=body) as r:
            assert r.status == 202, await r.text()
            data = await r.json()
            acked[data["error_id"]] = data["aggregated_count"]
    return acked


async def wait_for_file_issue(s: aiohttp.ClientSession, url: str, path: Path) -> tuple[dict[str, Any], float]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:
        async with s.get(url + "/diagnostics") as r:
            diag = await r.json()
        if any(str(path) in i for i in diag["issues"]):
            return diag, time.monotonic() - t0
        await asyncio.sleep(0.1)
    raise AssertionError(f"no issue names {path}: {diag}")


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_database_file_deleted_or_replaced_is_noticed_and_recreated(tmp_path: Path, how: str) -> None:
    path = tmp_path / "eh.duckdb"
    async with served(path) as (s, url):
        acked = await post_reports(s, url, "before", 30)
        async with s.get(url + "/diagnostics") as r:
            assert (await r.json())["status"] == "healthy"
        if how == "deleted":
            for p in (path, Path(f"{path}.wal")):
                if p.exists():
                    p.unlink()
        else:  # another database moved over ours
            foreign = tmp_path / "foreign.duckdb"
            opens_in_another_process(foreign)
            os.replace(foreign, path)
        diag, took = await wait_for_file_issue(s, url, path)
        assert diag["status"] != "healthy", diag
        print(f"noticed the {how} file after {took:.2f} s")
        while True:  # rebuilt: the store says so and is ok again
            async with s.get(url + "/diagnostics") as r:
                diag = await r.json()
            if diag["database"]["recreated"]:
                break
            await asyncio.sleep(0.1)
        assert diag["database"]["ok"] and any("recreated" in i for i in diag["issues"])
        assert path.exists()
        more = await post_reports(s, url, "before", 30)  # the same groups again, and counted on
        acked.update(more)
        acked.update(await post_reports(s, url, "after", 10))
    if how == "replaced":
        kept = [p.name for p in tmp_path.iterdir() if ".replaced-" in p.name]
        assert kept, "the file that replaced ours was not kept"
    # a restart on the file: every acknowledged group is there with its count
    async with served(path) as (s, url):
        for error_id, count in acked.items():
            async with s.get(f"{url}/errors/{error_id}") as r:
                assert r.status == 200, f"acknowledged group {error_id} lost"
                assert (await r.json())["aggregated_count"] >= count


async def test_a_file_deleted_while_the_store_is_closed_is_just_a_new_database(tmp_path: Path) -> None:
    path = tmp_path / "eh.duckdb"
    async with served(path) as (s, url):
        await post_reports(s, url, "x", 3)
    shutil.move(str(path), str(tmp_path / "moved.duckdb"))
    async with served(path) as (s, url):
        async with s.get(url + "/diagnostics") as r:
            diag = await r.json()
        assert diag["status"] == "healthy" and not diag["issues"], diag
