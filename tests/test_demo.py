"""Issue 7: the demo as a user runs it, and the dashboard in a real browser."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import psutil
import pytest


def demo_cmd(tmp: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "coordinator_plugins", "demo", "--workers", "2", "--seed", "7",
            "--database", str(tmp / "demo.duckdb"), "--report", str(tmp / "report.html"), "--port", "0", *extra]


def test_short_demo_injects_faults_recovers_and_loses_nothing(tmp_path: Path) -> None:
    proc = subprocess.run(demo_cmd(tmp_path, "--duration", "8", "--fault-rate", "2",
                                   "--faults", "kill,network,database,scheduler"),
                          capture_output=True, text=True, timeout=180)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "Traceback" not in proc.stderr
    summary = out[out.index("summary"):]
    faults = re.search(r"faults injected\s+(.+)", summary)
    assert faults and faults.group(1) != "none"
    assert int(re.search(r"tasks lost\s+(\d+)", summary).group(1)) == 0
    rec = re.search(r"recoveries\s+(\d+) \((\d+) succeeded and held;", summary)
    assert rec and int(rec.group(2)) >= 1
    submitted = int(re.search(r"tasks submitted\s+(\d+)", summary).group(1))
    completed = int(re.search(r"tasks completed\s+(\d+)", summary).group(1))
    assert submitted > 20 and completed == submitted
    html = (tmp_path / "report.html").read_text()
    assert html.count("<svg") == 4
    for title in ("Errors over time", "Recovery levels over time", "Time to recovery",
                  "Strategy success per error type"):
        assert title in html
    con = duckdb.connect(str(tmp_path / "demo.duckdb"), read_only=True)  # closed: no lock left
    assert con.execute("SELECT count(*) FROM recovery_performance").fetchone()[0] >= 1
    con.close()


def test_demo_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(demo_cmd(tmp_path, "--duration", "120", "--fault-rate", "1", "--faults", "network"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "stopped cleanly" in out and "Traceback" not in err
    for w in workers:
        assert not w.is_running() or w.status() == psutil.STATUS_ZOMBIE, f"worker {w.pid} left running"
    con = duckdb.connect(str(tmp_path / "demo.duckdb"), read_only=True)
    errors = con.execute("SELECT sum(aggregated_count) FROM error_reports").fetchone()[0]
    occurrences = con.execute("SELECT count(*) FROM error_occurrences").fetchone()[0]
    con.close()
    assert errors and errors == occurrences  # everything reported was written, counts included


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")
async def test_dashboard_shows_the_open_groups_in_a_browser(make_farm, tmp_path: Path) -> None:
    farm = await make_farm(plugin={"auto_recover": False})
    for comp in ("alpha", "beta", "gamma"):
        status, _ = await farm.post("/api/errors", {"message": f"{comp} lost its database", "component": comp})
        assert status == 202
    _, listing = await farm.get("/api/errors")
    expected = {e["error_id"] for e in listing["errors"]}
    assert len(expected) == 3
    profile = tmp_path / "chrome-profile"
    proc = await asyncio.create_subprocess_exec(
        _chromium() or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--virtual-time-budget=8000", "--dump-dom", farm.url + "/dashboard/errors",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with asyncio.timeout(90):
            dom, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    page = dom.decode()
    shown = set(re.findall(r"<td>([0-9a-f]{32})</td>", page))
    assert shown == expected, page[:2000]
    assert re.search(r'id="open-count">3<', page)


def test_the_summary_counts_a_success_only_once_it_held() -> None:
    from coordinator_plugins.demo.report import summary_rows
    from coordinator_plugins.demo.runner import successes_by_level

    def rec(success: bool, held: bool | None, level: int) -> dict[str, object]:
        return {"success": success, "held": held, "recovery_level": level, "execution_time": 1.0, "attempts": []}

    recoveries = [rec(True, True, 1), rec(True, False, 1), rec(True, None, 2), rec(False, False, 3)]
    stats = {"recoveries": recoveries, "submitted": 1, "completed": 1, "passed": 1, "failed_tests": 0, "errored": 0,
             "lost": 0, "faults": {}, "errors": 4, "groups": 1, "open_groups": 0,
             "by_level": successes_by_level(recoveries), "by_strategy": {}, "budget_refused": 0, "learned": {}}
    rows = dict(summary_rows(stats))
    assert rows["recoveries"] == "4 (1 succeeded and held; 1 recurred within the verify window, 1 not yet verified)"
    assert rows["recoveries by level"] == "L1: 1"
