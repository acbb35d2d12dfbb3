"""SPEC section 10 on a real PostgreSQL server, with real ``serve`` processes as fleet members
(tests/fleet_procs.py) and real worker processes. Each test has a database of its own."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fleet_procs import Member, poll, start_worker

PROBE = {"strategies": {"probe": "tests.strategies_for_tests:FleetProbe"}, "builtin_strategies": []}


@pytest.fixture
def fleet(tmp_path: Path, pg_url_sync: str) -> Iterator[Callable[..., Member]]:
    members: list[Member] = []

    def make(name: str, plugin: dict[str, Any] | None = None, env: dict[str, str] | None = None,
             coordinator: dict[str, Any] | None = None) -> Member:
        env = {"PROBE_LOG": str(tmp_path / "probe.log"), "PROBE_MEMBER": name, **(env or {})}
        m = Member(tmp_path, name, pg_url_sync, plugin, coordinator, env).start()
        members.append(m)
        return m

    yield make
    for m in members:
        m.stop()


def post_error(m: Member, message: str, **extra: Any) -> dict[str, Any]:
    status, data = m.request("POST", "/api/errors", {"message": message, "component": extra.pop("component", "db"),
                                                     "operation": "query", **extra})
    assert status == 202, (status, data)
    return dict(data)


def probe_runs(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "probe.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_one_group_per_fingerprint_with_exact_counts(fleet: Callable[..., Member]) -> None:
    a, b = fleet("a", {"auto_recover": False}), fleet("b", {"auto_recover": False})
    ids: list[str] = []
    lock = threading.Lock()

    def send(m: Member, k: int) -> None:
        for i in range(40):
            data = post_error(m, f"connection reset by peer at 10.0.0.{k}:5432 (attempt {i})")
            with lock:
                ids.append(data["error_id"])

    threads = [threading.Thread(target=send, args=(m, k)) for k in range(4) for m in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 320 and len(set(ids)) == 1  # one group, one error_id on every member
    for m in (a, b):
        group = m.get(f"/api/errors/{ids[0]}")
        assert group["aggregated_count"] == 320  # exact: every acknowledged occurrence, once
        fleet_list = m.get("/api/diagnostics")["fleet"]
        assert sorted(x["coordinator_id"] for x in fleet_list) == ["a", "b"]  # the live members
        assert fleet_list[0]["coordinator_id"] == m.name and fleet_list[0]["self"]


def test_resolve_and_reset_reach_every_member(fleet: Callable[..., Member]) -> None:
    a, b = fleet("a", {"auto_recover": False}), fleet("b", {"auto_recover": False})
    eid = post_error(a, "disk quota exceeded on /var/lib/build")["error_id"]
    assert post_error(b, "disk quota exceeded on /var/lib/build")["error_id"] == eid
    status, _ = a.request("POST", f"/api/errors/{eid}/resolve", {"resolution": "cleaned"})
    assert status == 200
    t0 = time.monotonic()
    poll(lambda: b.get("/api/diagnostics")["fleet_status"]["events_applied"] >= 1, 5, "b applying a's resolution")
    seen_after = time.monotonic() - t0
    # b's own view now knows it is resolved: its next occurrence is a regression, not one more of an open group
    post_error(b, "disk quota exceeded on /var/lib/build")
    group = a.get(f"/api/errors/{eid}")
    assert group["regression_count"] == 1 and group["resolution_status"] == "open", group
    status, _ = b.request("POST", "/api/recovery/reset", {"error_id": eid})
    assert status in (200, 404)
    poll(lambda: a.get("/api/diagnostics")["fleet_status"]["events_applied"] >= 1, 5, "a applying b's reset")
    print(f"resolution seen by the other member after {seen_after:.2f} s")


def test_one_strategy_run_per_group_at_a_time_across_the_fleet(fleet: Callable[..., Member], tmp_path: Path) -> None:
    env = {"PROBE_SECONDS": "0.6"}
    a, b = fleet("a", PROBE, env), fleet("b", PROBE, env)
    stop = time.monotonic() + 6
    while time.monotonic() < stop:  # the same fault reported to both, again and again
        post_error(a, "lock timeout on table builds")
        post_error(b, "lock timeout on table builds")
        time.sleep(0.05)
    poll(lambda: len([r for r in probe_runs(tmp_path) if "end" in r]) >= 3, 20, "a few probe runs")
    time.sleep(1.0)
    runs = sorted((r for r in probe_runs(tmp_path) if "end" in r), key=lambda r: r["start"])
    by_group: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_group.setdefault(r["error_id"], []).append(r)
    assert len(by_group) == 1
    for rs in by_group.values():
        for prev, nxt in zip(rs, rs[1:], strict=False):
            assert nxt["start"] >= prev["end"] - 0.01, (prev, nxt)  # never two at once, whichever member


def test_a_member_dies_mid_recovery_and_a_survivor_takes_over(fleet: Callable[..., Member], tmp_path: Path) -> None:
    a = fleet("a", PROBE, {"PROBE_SECONDS": "120"})  # a's recovery would hold its lease for minutes
    b = fleet("b", PROBE, {"PROBE_SECONDS": "0.2"})
    eid = post_error(a, "scheduler stalled on queue builds")["error_id"]
    poll(lambda: any(r["member"] == "a" for r in probe_runs(tmp_path)), 20, "a's recovery running")
    a.kill()
    killed = time.monotonic()
    takeover = poll(lambda: b.get("/api/diagnostics")["fleet_status"]["takeovers"], 3 + 5 + 10, "b taking over")
    took = time.monotonic() - killed
    assert takeover[0]["error_id"] == eid and takeover[0]["from"] == "a"
    assert takeover[0]["seconds_since_last_renewal"] <= 3 + 5
    poll(lambda: any(r["member"] == "b" and r["error_id"] == eid and "end" in r for r in probe_runs(tmp_path)), 20,
         "b running the recovery")
    poll(lambda: b.get(f"/api/errors/{eid}")["resolution_status"] == "resolved", 20, "the group resolved by b")
    members = b.get("/api/diagnostics")["fleet"]
    assert [m["coordinator_id"] for m in members] == ["b"]
    print(f"takeover {took:.2f} s after SIGKILL (lease_ttl 3 s)")


def test_the_budget_is_one_budget_for_the_fleet(fleet: Callable[..., Member]) -> None:
    plugin = {**PROBE, "recovery_budget": 3, "budget_window": 600}
    env = {"PROBE_LEVEL": "HIGH", "PROBE_SECONDS": "0.05"}  # a level-4 action: it spends budget
    a, b = fleet("a", plugin, env), fleet("b", plugin, env)
    for i in range(6):
        post_error(a if i % 2 else b, f"replica {'abcdef'[i]} diverged", component="cluster")
    poll(lambda: a.get("/api/diagnostics")["budget"]["refused"] + b.get("/api/diagnostics")["budget"]["refused"] >= 3,
         30, "the budget refusing")
    # each member's runs are committed by its own store: wait for b's to be visible to a
    poll(lambda: a.get("/api/recovery/metrics")["overall"]["total_executions"] >= 3, 20, "the granted runs stored")
    assert a.get("/api/recovery/metrics")["overall"]["total_executions"] == 3  # 3 in the fleet, not 3 per member
    ga, gb = a.get("/api/diagnostics")["budget"]["granted"], b.get("/api/diagnostics")["budget"]["granted"]
    assert ga + gb == 3


def test_runs_recorded_by_one_member_teach_every_member(fleet: Callable[..., Member], tmp_path: Path) -> None:
    a = fleet("a", PROBE)
    b = fleet("b", {**PROBE, "auto_recover": False})
    post_error(a, "artifact upload timed out", error_type="timeout")
    poll(lambda: any("end" in r for r in probe_runs(tmp_path)), 20, "a's run")

    def b_knows() -> bool:
        view = b.get("/api/recovery/strategies?error_type=timeout")
        return "probe" in json.dumps(view) and '"samples": 0' not in json.dumps(view.get("timeout", view))

    poll(b_knows, 10, "b learning a's run")
    assert b.get("/api/diagnostics")["fleet_status"]["runs_learned"] >= 1


def test_workers_move_to_a_survivor_and_no_task_is_lost(fleet: Callable[..., Member], tmp_path: Path) -> None:
    a, b = fleet("a", {"auto_recover": False}), fleet("b", {"auto_recover": False})
    workers = [start_worker([a.url, b.url], f"w{i}", tmp_path / f"w{i}.log") for i in range(3)]
    try:
        poll(lambda: a.get("/api/status")["workers"]["active"] == 3, 30, "workers registered with a")
        ids = []
        for _ in range(12):
            status, data = a.request("POST", "/api/tasks", {"kind": "sim", "duration": 0.5})
            assert status == 201, data
            ids.append(data["task_id"])
        poll(lambda: a.get("/api/status")["tasks"].get("completed", 0) >= 2, 30, "some tasks done on a")
        a.kill()
        poll(lambda: b.get("/api/status")["workers"]["active"] == 3, 30, "workers moved to b")
        took = poll(lambda: b.get("/api/status")["fleet"]["takeovers"], 30, "b taking over a's tasks")
        assert took[0]["dead"] == "a"

        def all_done() -> bool:  # b answers for every task: its own, and a's as the database has them
            done = 0
            for tid in ids:
                s, t = b.request("GET", f"/api/tasks/{tid}")
                done += s == 200 and t["status"] == "completed"
            return done == len(ids)

        poll(all_done, 60, "every acknowledged task completed")
        assert set(took[0]["tasks"]) <= set(ids)
    finally:
        for w in workers:
            w.terminate()
            w.wait(10)


def test_a_member_never_acts_on_another_members_worker(fleet: Callable[..., Member], tmp_path: Path) -> None:
    plugin = {"builtin_strategies": ["worker"], "verify_window": 0}
    a, b = fleet("a", plugin), fleet("b", plugin)
    w = start_worker([a.url], "wa", tmp_path / "wa.log")
    try:
        poll(lambda: a.get("/api/status")["workers"]["active"] == 1, 30, "wa registered with a")
        before = a.get("/api/status")["workers_detail"][0]
        # b hears of a's worker (a report forwarded to it, say): the worker is not b's to restart
        post_error(b, "worker wa stopped taking tasks", component="worker", error_type="worker", worker_id="wa")
        poll(lambda: b.get("/api/diagnostics")["recovery_metrics"]["outcomes"].get("not_applicable", 0) >= 1, 20,
             "b finding nothing of its own to act on")
        assert b.get("/api/recovery/metrics")["overall"]["total_executions"] == 0  # no strategy ran on b
        after = a.get("/api/status")["workers_detail"][0]
        assert after["worker_id"] == "wa" and after["pid"] == before["pid"] and w.poll() is None
        assert after.get("incarnation") == before.get("incarnation")
    finally:
        w.terminate()
        w.wait(10)


def test_the_fleet_demo_shows_a_takeover_with_nothing_lost(pg_url_sync: str) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "coordinator_plugins", "demo", "--coordinators", "2", "--database", pg_url_sync,
         "--workers", "2", "--duration", "12", "--task-rate", "3"],
        capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SIGKILL c1" in out.stdout and "c2 took over c1" in out.stdout
    assert "0 lost" in out.stdout and "nothing lost" in out.stdout
    assert "fleet counts exact for 2 of 2" in out.stdout
