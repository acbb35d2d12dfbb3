"""Issue 26, item 6: a hanging synchronous hook. It never delays a report (nor its HTTP answer),
runs on at most 4 daemon threads (overflow counted and logged once), and never keeps a stopped
``serve`` from exiting. Real servers, a real ``serve`` subprocess, real threads."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import wait_for
from coordinator_plugins.error_handling.intake.hookthreads import SYNC_HOOK_THREADS, HookOverflow, HookThreads


def hook_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("error-hook-")]


async def test_a_hung_sync_hook_never_delays_post_errors(make_farm: Any) -> None:
    release = threading.Event()
    entered: list[str] = []

    def hung(report: Any) -> None:  # a "*" hook stuck until the test ends
        entered.append(report.error_id)
        release.wait()

    # hook_timeout far longer than the guard: before the fix every POST waited for the hook
    farm = await make_farm(plugin={"auto_recover": False, "hook_timeout": 3600})
    farm.integ.register_error_hook("*", hung)
    try:
        async with asyncio.timeout(60):  # a hang guard, not a measurement
            for i in range(12):
                async with farm.session.post(farm.url + "/api/errors",
                                             json={"message": f"disk {i} gone", "component": f"c{i}"}) as r:
                    assert r.status == 202, await r.text()
            await wait_for(lambda: len(entered) >= SYNC_HOOK_THREADS, 60, "the hooks to start in the background")
        assert not release.is_set()  # every answer came while the hooks were still stuck
        assert len(entered) == SYNC_HOOK_THREADS  # 4 threads, all stuck: the other calls wait
        assert all(t.daemon for t in hook_threads())
        assert farm.integ.error_handler.hooks.threads == SYNC_HOOK_THREADS  # however many calls wait
        m = await farm.integ.get_error_metrics()
        assert m["total_errors"] == 12 and m["hook_calls"] == 12
    finally:
        release.set()


async def test_hook_threads_are_bounded_and_overflow_is_counted_and_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    started = threading.Semaphore(0)

    def stuck() -> bool:
        started.release()
        return release.wait()

    pool = HookThreads(size=2, backlog=2)
    futures = []
    try:
        with caplog.at_level(logging.ERROR):
            for _ in range(2):
                futures.append(pool.submit(stuck)[0])
            for _ in range(2):  # both threads busy
                assert started.acquire(timeout=60)
            for _ in range(2):  # they wait in the backlog
                futures.append(pool.submit(stuck)[0])
            for _ in range(3):
                with pytest.raises(HookOverflow):
                    pool.submit(stuck)
        assert pool.threads == 2 and pool.overflow == 3
        assert len([r for r in caplog.records if "hook threads are busy" in r.getMessage()]) == 1
    finally:
        release.set()
    async with asyncio.timeout(60):
        assert await asyncio.gather(*futures) == [True] * 4
    pool.close()  # the idle threads end
    await wait_for(lambda: pool.threads == 0, 60, "the hook threads to end")


async def test_serve_exits_after_sigterm_whatever_a_hook_does(tmp_path: Path) -> None:
    entered = tmp_path / "entered"
    cfg = tmp_path / "serve.toml"
    cfg.write_text(
        '[coordinator]\nhost = "127.0.0.1"\nport = 0\n'
        f'database = "{tmp_path / "coord.duckdb"}"\n[plugins]\nenabled = ["error_handling"]\n'
        f'[plugins.error_handling]\ndatabase = "{tmp_path / "eh.duckdb"}"\nauto_recover = false\n'
        'hook_timeout = 0.5\n[plugins.error_handling.hooks]\n"*" = ["tests.hooks_for_tests:hang"]\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coordinator_plugins", "serve", "--config", str(cfg),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**__import__("os").environ, "HOOK_ENTERED": str(entered)})
    try:
        assert proc.stdout is not None and proc.stderr is not None
        async with asyncio.timeout(60):
            line = (await proc.stdout.readline()).decode()
            assert "listening on" in line, line + (await proc.stderr.read()).decode()
            url = line.strip().rsplit(" ", 1)[-1]
            async with aiohttp.ClientSession() as s:
                for i in range(6):  # more hung calls than hook threads
                    async with s.post(url + "/api/errors", json={"message": f"m{i}", "component": "c"}) as r:
                        assert r.status == 202, await r.text()
            await wait_for(entered.exists, 60, "the hook to start")
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(90):  # a hang guard: before the fix it never exited
                rc = await proc.wait()
        except TimeoutError:
            pytest.fail("serve did not exit after SIGTERM with a hook stuck in time.sleep(3600)")
        assert rc == 0, (await proc.stderr.read()).decode()[-2000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
