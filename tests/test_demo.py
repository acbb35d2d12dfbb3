"""Issue 7: the demo as a user runs it, and the dashboard in a real browser."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import psutil


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
    rec = re.search(r"recoveries\s+(\d+) \((\d+) succeeded\)", summary)
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
