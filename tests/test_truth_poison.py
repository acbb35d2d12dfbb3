"""Issue 27 item 2 (SPEC 9): a poison task on the real reference farm."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.test_reliability import start_serve

POISON = {"kind": "sim", "outcome": "error", "message": "fixture db missing: cannot set up test"}


def farm_toml(tmp: Path) -> Path:
    cfg = tmp / "serve.toml"
    cfg.write_text(
        '[coordinator]\nhost = "127.0.0.1"\nport = 0\nworkers = 2\nheartbeat_interval = 0.3\n'
        f'heartbeat_timeout = 3.0\nscheduler_interval = 0.1\ndatabase = "{tmp / "coord.duckdb"}"\n'
        '[plugins]\nenabled = ["error_handling"]\n[plugins.error_handling]\n'
        f'database = "{tmp / "eh.duckdb"}"\nverify_window = 5\n')
    return cfg


async def test_a_poison_task_is_attempted_at_most_3_times_on_2_workers_and_its_group_fails(tmp_path: Path) -> None:
    proc, url = await start_serve(farm_toml(tmp_path))
    try:
        async with aiohttp.ClientSession() as s:
            async def get(path: str) -> Any:
                async with s.get(url + path) as r:
                    assert r.status == 200, path
                    return await r.json()

            async def until(path: str, pred: Any, timeout: float, what: str) -> Any:
                deadline = time.monotonic() + timeout
                while True:
                    value = await get(path)
                    if pred(value):
                        return value
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{what}: {value!r}")
                    await asyncio.sleep(0.2)

            first = await until("/api/status", lambda st: st["workers"]["active"] == 2, 30, "2 workers")
            pids = {w["worker_id"]: w["pid"] for w in first["workers_detail"]}
            async with s.post(url + "/api/tasks", json=POISON) as r:
                tid = (await r.json())["task_id"]
            # it ends failed for good, or keeps being attempted past the rule (the defect)
            task = await until(f"/api/tasks/{tid}", lambda t: t.get("final") or t["attempt"] > 3, 60,
                               "the poison task failed for good")
            assert task.get("final") and task["status"] == "failed", task
            assert task["attempt"] <= 3, task
            assert len(set(task["failed_on"])) == 2, task  # the re-runs went to the other worker
            groups = (await get("/api/errors?status=all"))["errors"]
            mine = [g for g in groups if "fixture db missing" in g["message"]]
            assert len(mine) == 1, groups
            group = await until(f"/api/errors/{mine[0]['error_id']}", lambda g: g["resolution_status"] == "failed",
                                20, "its group failed")
            assert "poison task" in group["recovery_details"]["failure_reason"], group
            # no worker was restarted for it, and nothing runs it again
            await asyncio.sleep(4.0)
            again = await get(f"/api/tasks/{tid}")
            assert again["attempt"] == task["attempt"], again
            status = await get("/api/status")
            assert {w["worker_id"]: w["pid"] for w in status["workers_detail"]} == pids, status["workers_detail"]
            metrics = (await get("/api/diagnostics"))["recovery_metrics"]
            assert metrics["poison_tasks"] == 1 and metrics["successes"] == 0, metrics
    finally:
        proc.terminate()
        await proc.wait()
