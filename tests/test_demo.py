"""Issues 7 and 16: the demo as a user runs it. Its summary agrees with itself, with its last
progress line and with the database; each run has a fresh database unless one is named; the
live view stays intact in a real terminal; Ctrl-C stops it cleanly; the dashboard works during
a run."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from coordinator_plugins.error_handling import setup
from coordinator_plugins.error_handling.recovery.outcome import recovery_outcome
from tests.browser import chromium, needs_chromium

ROOT = Path(__file__).resolve().parent.parent


def demo_cmd(tmp: Path, *extra: str, database: bool = True) -> list[str]:
    cmd = [sys.executable, "-m", "coordinator_plugins", "demo", "--workers", "2", "--seed", "7",
           "--report", str(tmp / "report.html"), "--port", "0", *extra]
    return cmd + (["--database", str(tmp / "demo.duckdb")] if database else [])


def run_demo(tmp: Path, *extra: str, database: bool = True, cwd: Path | None = None) -> str:
    proc = subprocess.run(demo_cmd(tmp, *extra, database=database), capture_output=True, text=True, timeout=240,
                          cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def summary_of(out: str) -> dict[str, str]:
    rows = {}
    for line in out[out.index("\nsummary\n"):].splitlines():
        m = re.match(r"^  (\S.*?)\s{2,}(\S.*)$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def ints(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", text)]


@dataclass
class Stored:
    groups: list[dict[str, Any]]
    histories: dict[str, list[dict[str, Any]]]
    metrics: dict[str, Any]
    occurrences: dict[str, int] = field(default_factory=dict)


async def read_database(path: Path) -> Stored:
    """What the database holds, read through the plugin's own HTTP API on a fresh app."""
    app = web.Application()
    setup(app, None, {"database": str(path), "auto_recover": False, "metrics": False})
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("/api")).rstrip("/")
        async with aiohttp.ClientSession() as s:
            async def get(p: str, **params: Any) -> Any:
                async with s.get(url + p, params=params) as r:
                    assert r.status == 200, await r.text()
                    return await r.json()

            groups: list[dict[str, Any]] = []
            cursor = None
            while True:
                page = await get("/errors", status="all", limit=1000, **({"cursor": cursor} if cursor else {}))
                groups += page["errors"]
                cursor = page["next_cursor"]
                if not cursor:
                    break
            histories = {g["error_id"]: (await get("/recovery/history", error_id=g["error_id"]))["history"]
                         for g in groups}
            occurrences = {g["error_id"]: (await get(f"/errors/{g['error_id']}/occurrences"))["total"] for g in groups}
            return Stored(groups, histories, await get("/recovery/metrics"), occurrences)
    finally:
        await server.close()


def test_demo_summary_agrees_with_itself_its_progress_and_the_database(tmp_path: Path) -> None:
    out = run_demo(tmp_path, "--duration", "10", "--fault-rate", "2", "--faults", "kill,network,database,scheduler")
    s = summary_of(out)
    assert int(s["tasks lost"]) == 0
    submitted, completed = int(s["tasks submitted"]), ints(s["tasks completed"])[0]
    assert submitted > 20 and completed == submitted
    faults = ints(s["faults injected"])
    assert faults[0] >= 3 and faults[0] == sum(faults[1:])
    occurrences, groups, still_open = ints(s["errors reported"])
    recoveries, succeeded, failed, nothing, deferred = ints(s["recoveries"])
    assert recoveries == succeeded + failed + nothing + deferred and succeeded >= 1
    levels = [ints(part) for part in s["recoveries by level"].split("(the level")[0].split("),")]
    assert sum(n for _, n, _ in levels) == recoveries and sum(ok for _, _, ok in levels) == succeeded
    runs = re.findall(r"(\w+) (\d+) \((\d+) succeeded\)", s["strategy runs"])
    assert ints(s["strategy runs"])[0] == sum(int(n) for _, n, _ in runs)
    # the last progress line is the summary's numbers
    done = next(line for line in out.splitlines() if line.startswith("done "))
    assert f"tasks {submitted} submitted, {completed} completed, 0 running, 0 pending, 0 lost" in done
    assert f"faults {faults[0]} " in done and f"errors {occurrences} in {groups} groups ({still_open} open)" in done
    assert (f"recoveries {recoveries}: {succeeded} succeeded, {failed} failed, {nothing} nothing applicable, "
            f"{deferred} deferred") in done
    assert out.index("done ") < out.index("\nsummary\n")

    db = asyncio.run(read_database(tmp_path / "demo.duckdb"))
    assert len(db.groups) == groups
    assert sum(g["resolution_status"] != "resolved" for g in db.groups) == still_open
    assert sum(g["aggregated_count"] for g in db.groups) == occurrences == sum(db.occurrences.values())
    history = [r for h in db.histories.values() for r in h]
    assert len(history) == recoveries and sum(recovery_outcome(r) == "succeeded" for r in history) == succeeded
    by_level: dict[int, int] = {}
    for r in history:
        by_level[r["recovery_level"]] = by_level.get(r["recovery_level"], 0) + 1
    assert by_level == {lv: n for lv, n, _ in levels}
    stored = {sid: (m["total_executions"], m["successes"]) for sid, m in db.metrics["strategies"].items()}
    assert stored == {sid: (int(n), int(ok)) for sid, n, ok in runs}

    html = (tmp_path / "report.html").read_text()
    for title in ("Tasks pending and running", "Errors per second, by type", "Recoveries: the level each ended at",
                  "Time to recovery", "Strategy success per error type", "Which fault led to which recovery"):
        assert title in html, title
    assert html.count("<svg") == 5
    assert html.count("<tr><td>") == faults[0]  # one row per fault in the fault -> recovery table


def test_each_run_has_a_fresh_database_unless_one_is_named(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    quick = ("--duration", "2", "--fault-rate", "2", "--faults", "network", "--task-rate", "5", "--workers", "1")
    temp_dbs = []
    for _ in range(2):
        out = run_demo(tmp_path, *quick, database=False, cwd=cwd)
        m = re.search(r"^  database\s+(\S+)\s+\(new for this run, in a temporary directory removed at the end",
                      out, re.M)
        assert m, out
        temp_dbs.append(Path(m.group(1)))
        assert not temp_dbs[-1].parent.exists()  # removed, the coordinator's database with it
        assert "earlier runs" not in summary_of(out)["errors reported"]
    assert temp_dbs[0] != temp_dbs[1]
    assert sorted(p.name for p in cwd.iterdir()) == []  # nothing left in the working directory
    kept = cwd / "kept.duckdb"
    first = run_demo(tmp_path, *quick, "--database", str(kept), database=False, cwd=cwd)
    assert f"database     {kept}  (new; kept after the run)" in first
    assert kept.exists()
    groups = ints(summary_of(first)["errors reported"])[1]
    second = run_demo(tmp_path, *quick, "--database", str(kept), database=False, cwd=cwd)
    assert f"(reused: it holds {groups} error groups from earlier runs; only this run is counted below)" in second
    assert sorted(p.name for p in cwd.iterdir()) == ["kept.duckdb"]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
def test_live_view_stays_intact_in_a_terminal(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    cmd = " ".join(demo_cmd(tmp_path, "--duration", "8", "--fault-rate", "2", "--faults", "kill,network,scheduler"))
    script.write_text(f"cd {tmp_path}\nexport PYTHONPATH={ROOT}\n{cmd}\necho EXIT=$?\nsleep 300\n")
    sock = f"cp-test-{os.getpid()}"
    tmux = ["tmux", "-L", sock]
    subprocess.run([*tmux, "new-session", "-d", "-s", "demo", "-x", "150", "-y", "30", f"bash {script}"], check=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            screen = subprocess.run([*tmux, "capture-pane", "-p", "-J", "-S", "-", "-t", "demo"],
                                    capture_output=True, text=True).stdout
            if "EXIT=" in screen or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
    assert "EXIT=0" in screen, screen
    lines = screen.splitlines()
    s = summary_of(screen)
    # the block was redrawn in place: no stale copy of it anywhere, only the final one
    assert not [line for line in lines if line.startswith("t=")], screen
    assert len([line for line in lines if line.startswith("done ")]) == 1
    assert len([line for line in lines if re.match(r"^  recoveries \d+:", line)]) == 1
    # each injected fault was shown as it happened, above the block
    fault_lines = [line for line in lines if re.match(r"^\s+\d+\.\d s  fault     ", line)]
    assert len(fault_lines) == ints(s["faults injected"])[0] >= 1
    assert lines.index(fault_lines[-1]) < lines.index(next(x for x in lines if x.startswith("done ")))
    # log records went above the block as well, whole
    for line in lines:
        if "WARNING" in line:
            assert line.startswith("        log  WARNING"), line


def test_demo_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    # its own process group, as a shell gives it: Ctrl-C in a terminal signals the whole group
    proc = subprocess.Popen(demo_cmd(tmp_path, "--duration", "120", "--fault-rate", "1", "--faults", "network"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("t="):
                break
        me = psutil.Process(proc.pid)
        deadline = time.monotonic() + 20
        while len(me.children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = me.children(recursive=True)
        assert len(workers) >= 2
        # the workers are not in the terminal's process group: the demo stops them after their tasks
        assert all(os.getpgid(w.pid) != os.getpgid(proc.pid) for w in workers)
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "stopped cleanly" in out and "Traceback" not in err
    assert "\nsummary\n" in out and (tmp_path / "report.html").exists()
    assert "tasks lost" not in out and "tasks unfinished" in out  # an interrupted run loses nothing
    for w in workers:
        assert not w.is_running() or w.status() == psutil.STATUS_ZOMBIE, f"worker {w.pid} left running"
    db = asyncio.run(read_database(tmp_path / "demo.duckdb"))
    counted = sum(g["aggregated_count"] for g in db.groups)
    assert counted and counted == sum(db.occurrences.values())  # everything reported was written, counts included
    assert counted == ints(summary_of(out)["errors reported"])[0]


@needs_chromium
async def test_dashboard_during_a_demo_run(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *demo_cmd(tmp_path, "--duration", "14", "--fault-rate", "2", "--faults", "kill,network,database"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        url = None
        async with asyncio.timeout(60):
            while url is None:
                line = (await proc.stdout.readline()).decode()
                assert line, "the demo ended before printing its dashboard"
                m = re.search(r"dashboard\s+(http://\S+)", line)
                url = m.group(1) if m else None
        drain = asyncio.ensure_future(proc.stdout.read())  # keep its pipe flowing
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(url)
            await page.wait_for_function("Number(document.querySelector('#chart-errors').dataset.total) >= 1",
                                         timeout=60_000)
            seen = int(await page.locator("#chart-errors").get_attribute("data-total") or 0)
            await page.wait_for_function(
                f"Number(document.querySelector('#chart-errors').dataset.total) > {seen}", timeout=60_000)
            await page.wait_for_function("Number(document.querySelector('#chart-recoveries').dataset.total) >= 1",
                                         timeout=60_000)
            await page.screenshot(path=str(tmp_path / "dashboard-during-demo.png"), full_page=True)
            await page.locator("#leaderboard .board").first.wait_for(timeout=60_000)
            await page.check("#show-resolved")
            first = page.locator("#groups tbody tr[data-error-id] a").first
            await first.wait_for(timeout=30_000)
            await first.click()
            await page.wait_for_selector(".recovery, #group-body .empty", timeout=30_000)
            assert await page.locator("#chart-occurrences").count() == 1
        async with asyncio.timeout(180):
            await proc.wait()
        out = (await drain).decode()
        assert proc.returncode == 0, out
        assert "\nsummary\n" in out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
