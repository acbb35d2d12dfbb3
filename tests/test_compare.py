"""Issue 31: ``demo --compare``. A short real run (real worker processes, real faults, one fresh
database per policy): every number of its table is drawn again from what each policy's directory
keeps (the coordinator's task records, the plugin's database, tasks.json); the ``rehang`` fault
is real (a restart keeps the worker wedged, a replacement serves); bad options are refused."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from coordinator_plugins.demo.collect import RAN
from coordinator_plugins.demo.compare import parse_policies, summarize
from coordinator_plugins.demo.compare_report import ratio, verdict
from coordinator_plugins.demo.report import percentile
from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration
from coordinator_plugins.reference.db import CoordinatorDB

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ["off", "ladder", "adaptive"]


def table(out: str) -> dict[str, dict[str, str]]:
    """The printed table: row name -> policy -> cell."""
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split() == POLICIES)
    rows: dict[str, dict[str, str]] = {}
    for line in lines[head + 1:]:
        if not line.startswith("  ") or line.startswith("   "):
            break
        cells = [c for c in line[2:].split("  ") if c.strip()]
        name, values = cells[0].strip(), [c.strip() for c in cells[1:]]
        assert len(values) == len(POLICIES), line
        rows[name] = dict(zip(POLICIES, values, strict=True))
    return rows


def secs(xs: list[float]) -> tuple[str, str]:
    return f"{statistics.fmean(xs):.2f} s", f"{percentile(xs, 0.95):.2f} s"


async def plugin_numbers(path: Path) -> dict[str, Any]:
    """Strategy runs and held recoveries, read back through the plugin from its database."""
    eh = EnhancedErrorHandlingIntegration(None, {"database": str(path), "auto_recover": False})
    await eh.start()
    try:
        summary = await eh.get_recovery_history(limit=10_000)
        assert summary is not None
        runs, ttr, recoveries, by = 0, [], 0, {}
        for group in summary["errors"]:
            hist = await eh.get_recovery_history(group["error_id"])
            assert hist is not None
            for entry in hist["history"]:
                recoveries += 1
                if entry["success"] and entry.get("verification") != "recurred":
                    ttr.append(float(entry["execution_time"]))
                for a in entry.get("attempts") or []:
                    if a["outcome"] in RAN:
                        runs += 1
                        by[a["strategy_id"]] = by.get(a["strategy_id"], 0) + 1
        perf = await eh.get_performance_metrics()
    finally:
        await eh.stop()
    return {"runs": runs, "ttr": ttr, "recoveries": recoveries, "by": by,
            "executions": perf["overall"]["total_executions"]}


async def coordinator_tasks(path: Path) -> dict[str, str]:
    db = CoordinatorDB(str(path))
    await db.open()
    try:
        return {t["task_id"]: t["status"] for t in await db.load_tasks()}
    finally:
        await db.close()


def test_the_compare_table_is_the_databases_arithmetic(tmp_path: Path) -> None:
    where = tmp_path / "cmp"
    proc = subprocess.run(
        [sys.executable, "-m", "coordinator_plugins", "demo", "--compare", ",".join(POLICIES), "--workers", "3",
         "--duration", "8", "--task-rate", "4", "--fault-rate", "0.5", "--faults", "kill,rehang", "--seed", "5",
         "--compare-dir", str(where), "--report", str(tmp_path / "compare.html")],
        capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    rows = table(proc.stdout)
    for policy in POLICIES:
        col = {k: v[policy] for k, v in rows.items()}
        tasks = json.loads((where / policy / "tasks.json").read_text(encoding="utf-8"))
        db = asyncio.run(coordinator_tasks(where / policy / "coordinator.duckdb"))
        # the coordinator's own records agree with tasks.json, task by task
        assert {t["task_id"]: t["status"] for t in tasks} == {t: db[t] for t in (x["task_id"] for x in tasks)}
        done = [t for t in tasks if t["status"] == "completed"]
        assert col["tasks completed"] == f"{len(done)}/{len(tasks)}"
        assert col["tasks lost"] == str(sum(1 for t in tasks if db[t["task_id"]] not in ("completed", "failed")))
        assert col["tasks failed for good"] == str(sum(1 for t in tasks if db[t["task_id"]] == "failed"))
        tis = [t["finished"] - t["submitted"] for t in done]
        assert all(x > 0 for x in tis)
        assert (col["time in system, mean"], col["time in system, p95"]) == secs(tis)
        assert col["makespan"] == f"{max(t['finished'] for t in done):.2f} s"
        assert int(col["faults injected"]) > 0
        if policy == "off":
            assert not (where / "off" / "errors.duckdb").exists()
            assert col["strategy runs"] == col["time to recovery, mean"] == "n/a"
            assert col["worker restarts"] == "0"  # nothing restarts a worker without the plugin
            continue
        n = asyncio.run(plugin_numbers(where / policy / "errors.duckdb"))
        assert col["strategy runs"] == str(n["runs"]) == str(n["executions"])
        assert col["recoveries that held"] == f"{len(n['ttr'])}/{n['recoveries']}"
        if n["ttr"]:
            assert (col["time to recovery, mean"], col["time to recovery, p95"]) == secs(n["ttr"])
        # each worker or replace run starts at least one worker process
        assert int(col["worker restarts"]) >= n["by"].get("worker", 0) + n["by"].get("replace", 0) > 0
    # the verdict line and the kept databases are printed; the report draws one curve per policy
    assert "verdict: ladder" in proc.stdout and "adaptive" in proc.stdout.split("verdict:")[1]
    assert f"{where / 'adaptive' / 'errors.duckdb'}" in proc.stdout
    html = (tmp_path / "compare.html").read_text(encoding="utf-8")
    assert "Completion curves" in html and all(f">{p}<" in html for p in POLICIES)


def test_compare_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "coordinator_plugins", "demo", *args], capture_output=True,
                              text=True, timeout=60, cwd=tmp_path)

    bad = run("--compare", "off,greedy")
    assert bad.returncode == 2 and "greedy" in bad.stderr and "ladder" in bad.stderr
    burst = run("--compare", "off,ladder", "--faults", "kill,burst")
    assert burst.returncode == 2 and "burst" in burst.stderr and "off" in burst.stderr
    (tmp_path / "d" / "ladder").mkdir(parents=True)
    # without --faults, --compare injects kill,hang (which off can take): the refusal is the directory's
    taken = run("--compare", "off,ladder", "--compare-dir", str(tmp_path / "d"), "--duration", "1")
    assert taken.returncode == 2 and "--compare-dir" in taken.stderr and "fresh database" in taken.stderr
    assert "burst" not in taken.stderr
    db = run("--compare", "ladder", "--database", str(tmp_path / "x.duckdb"))
    assert db.returncode == 2 and "--database" in db.stderr


def test_policy_names_ratios_and_verdict() -> None:
    assert parse_policies("adaptive, off,adaptive") == ["adaptive", "off"]
    with pytest.raises(ValueError, match="accepted: off, ladder, score, adaptive"):
        parse_policies("ladder,fixed")
    assert ratio(1.0, 4.0) == 0.25 and ratio(1.0, 0.0) is None and ratio(None, 1.0) is None
    base = {"lost": 0, "strategy_runs": 10}
    rows = [{**base, "policy": "off", "tis_mean": 10.0, "lost": 2, "strategy_runs": None},
            {**base, "policy": "ladder", "tis_mean": 0.5},
            {**base, "policy": "adaptive", "tis_mean": 0.4, "strategy_runs": 6}]
    line = verdict(rows)
    assert "ladder 0.05x off's mean time in system (no more tasks lost)" in line
    assert "adaptive 0.80x ladder's mean time in system, 0.60x its strategy runs" in line
    assert verdict(rows[:1]).startswith("verdict: nothing to compare")


def test_summarize_counts_each_task_once() -> None:
    tasks = [{"task_id": "a", "status": "completed", "submitted": 0.0, "finished": 1.0},
             {"task_id": "b", "status": "completed", "submitted": 1.0, "finished": 4.0},
             {"task_id": "c", "status": "pending", "submitted": 2.0, "finished": None},
             {"task_id": "d", "status": "failed", "submitted": 2.0, "finished": 2.5}]
    s = summarize(tasks)
    assert (s["submitted"], s["completed"], s["lost"], s["failed"]) == (4, 2, 1, 1)
    assert s["tis_mean"] == 2.0 and s["makespan"] == 4.0 and s["curve"] == [(1.0, 1.0), (4.0, 2.0)]


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads process states from /proc")
def test_a_wedged_worker_hangs_again_after_a_restart_and_a_replacement_serves(tmp_path: Path) -> None:
    asyncio.run(_wedged(tmp_path))


async def _wedged(tmp_path: Path) -> None:
    import random

    from aiohttp import web

    from coordinator_plugins.demo.faults import FaultInjector
    from coordinator_plugins.demo.runner import bind
    from coordinator_plugins.reference import COORDINATOR_KEY, build_app

    app = build_app({"coordinator": {"host": "127.0.0.1", "port": 0, "heartbeat_interval": 0.25,
                                     "heartbeat_timeout": 1.5, "database": str(tmp_path / "c.duckdb"),
                                     "worker_max_tasks": 1},
                     "plugins": {"enabled": []}})
    coord = app[COORDINATOR_KEY]
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sock = bind(0)
    await web.SockSite(runner, sock).start()
    try:
        port = sock.getsockname()[1]
        coord.url = coord.launcher.url = f"http://127.0.0.1:{port}"
        faults = FaultInjector(coord, None, coord.url, ["rehang"], random.Random(1), lambda *a: None,
                               wedge_dir=tmp_path / "wedged")
        await coord.launch_workers(2)
        await until(lambda: sum(w.status == "active" for w in coord.workers.values()) == 2)
        await faults.inject()
        (victim,) = [w for w in coord.workers if (tmp_path / "wedged" / w).exists()]
        await until(lambda: coord.workers[victim].status == "lost")
        # a plain restart: registered and serving, then frozen again by its wedged state
        assert await coord.restart_worker(victim, timeout=30) == victim
        await until(lambda: coord.workers[victim].status == "lost")
        assert stopped(coord.launcher.pid(victim))
        # a replacement under a new id runs a task longer than the wedge takes to strike
        other = next(w for w in coord.workers if w != victim)
        await coord.drain_worker(other)
        new = await coord.replace_worker(victim, timeout=30)
        assert new is not None and new != victim and coord.workers[victim].status == "stopped"
        task = coord.submit({"kind": "sim", "duration": 2.0, "outcome": "pass"})
        await asyncio.wait_for(task.done.wait(), 60)
        assert task.status == "completed" and task.worker_id == new
        assert not stopped(coord.launcher.pid(new))
    finally:
        await runner.cleanup()
        sock.close()


async def until(cond: Any, limit: float = 60.0) -> None:
    """Wait for a condition (the limit only stops a broken run from hanging the suite)."""
    for _ in range(int(limit / 0.05)):
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition never held")


def stopped(pid: int | None) -> bool:
    assert pid is not None
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"
