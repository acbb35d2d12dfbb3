"""Issue 5: progressive recovery that learns."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration, RecoveryLevel, validate_config
from coordinator_plugins.error_handling.learning.simulate import SyntheticStrategy
from coordinator_plugins.error_handling.learning.timeouts import AdaptiveTimeouts
from coordinator_plugins.error_handling.recovery.budget import RecoveryBudget

L, M, H = RecoveryLevel.LOW, RecoveryLevel.MEDIUM, RecoveryLevel.HIGH


async def farm_of(tmp_path: Path, truth: dict[tuple[str, str], float], levels: dict[str, RecoveryLevel],
                  **cfg: Any) -> EnhancedErrorHandlingIntegration:
    base: dict[str, Any] = {"database": str(tmp_path / "learn.duckdb"), "auto_recover": False,
                            "builtin_strategies": [], "escalation_backoff": 0, "regression_window": 0, "seed": 7,
                            "verify_window": 0}  # simulations: a success counts at once
    base.update(cfg)
    integ = EnhancedErrorHandlingIntegration(None, validate_config(base))
    rng = random.Random(11)
    for sid, level in levels.items():
        integ.add_custom_strategy(sid, SyntheticStrategy(sid, level, lambda et, s: truth.get((et, s), 0.0), rng))
    await integ.start()
    return integ


def first_choice(info: dict[str, Any]) -> str:
    return next(a["strategy_id"] for a in info["attempts"] if a["outcome"] != "not_applicable")


def tag(n: int) -> str:
    """Letters, so that the fingerprint does not mask it: each incident is its own group."""
    return "".join(chr(97 + (n // 26**k) % 26) for k in range(3))


async def incident(integ: EnhancedErrorHandlingIntegration, etype: str, n: int) -> dict[str, Any]:
    ok, info = await integ.handle_error(f"incident {tag(n)}", {"component": "c", "error_type": etype})
    return info


async def test_adaptive_finds_the_best_strategy_per_error_type(tmp_path: Path) -> None:
    truth = {("network", "a"): 0.2, ("network", "b"): 0.9, ("network", "c"): 0.5,
             ("timeout", "a"): 0.9, ("timeout", "b"): 0.2, ("timeout", "c"): 0.4}
    integ = await farm_of(tmp_path, truth, {"a": L, "b": L, "c": L})
    try:
        picks: dict[str, list[str]] = {"network": [], "timeout": []}
        for n in range(150):
            for et in picks:
                picks[et].append(first_choice(await incident(integ, et, n)))
        assert picks["network"][-50:].count("b") >= 42, picks["network"][-50:]
        assert picks["timeout"][-50:].count("a") >= 42, picks["timeout"][-50:]
        recs = await integ.get_strategy_recommendations("network")
        assert recs[0]["strategy_id"] == "b"
    finally:
        await integ.stop()


async def test_adaptive_skips_levels_that_keep_failing(tmp_path: Path) -> None:
    truth = {("database", "low"): 0.0, ("database", "mid"): 0.0, ("database", "high"): 0.95}
    integ = await farm_of(tmp_path, truth, {"low": L, "mid": M, "high": H}, max_recovery_level=5,
                          recovery_budget=0)
    try:
        starts = []
        for n in range(60):
            info = await incident(integ, "database", n)
            first = next(a for a in info["attempts"] if a["outcome"] != "not_applicable")
            starts.append(first["level"])
        assert starts[0] == 1
        # Across 12 seeds: 15-19 of the last 20 start at level 4 (6-11 of the first 20).
        late, early = sum(1 for s in starts[-20:] if s == 4), sum(1 for s in starts[:20] if s == 4)
        assert late >= 14 and late > early, starts
        assert max(starts) <= 4  # never starts at level 5
        info = await incident(integ, "database", 99)
        assert info.get("skipped_levels") and "kept failing" in info["start_reason"]
    finally:
        await integ.stop()


async def test_adaptive_follows_when_the_best_strategy_changes(tmp_path: Path) -> None:
    truth = {("network", "a"): 0.9, ("network", "b"): 0.1}
    integ = await farm_of(tmp_path, truth, {"a": L, "b": L})
    try:
        for n in range(80):
            await incident(integ, "network", n)
        truth[("network", "a")], truth[("network", "b")] = 0.1, 0.9
        picks = [first_choice(await incident(integ, "network", 100 + n)) for n in range(60)]
        assert picks[-20:].count("b") >= 16, picks
    finally:
        await integ.stop()


async def test_ladder_and_score_policies(tmp_path: Path) -> None:
    truth = {("network", "a"): 0.0, ("network", "b"): 1.0}
    ladder = await farm_of(tmp_path, truth, {"a": L, "b": L}, selection="ladder")
    try:
        for n in range(5):
            info = await incident(ladder, "network", n)
            assert [a["strategy_id"] for a in info["attempts"]] == ["a", "b"]
            assert info["attempts"][0]["decision"]["reason"] == "first in registration order"
    finally:
        await ladder.stop()
    score = await farm_of(tmp_path / "s" if (tmp_path / "s").mkdir() is None else tmp_path, truth,
                          {"a": L, "b": L}, selection="score")
    try:
        firsts = [first_choice(await incident(score, "network", n)) for n in range(10)]
        assert firsts[-5:] == ["b"] * 5  # greedy on the recorded score once both have a record
    finally:
        await score.stop()


def test_timeouts_shrink_after_fast_successes_and_grow_after_timeouts() -> None:
    t = AdaptiveTimeouts(default=10.0)
    assert t.get("network", "x") == 10.0
    for _ in range(5):
        t.observe_success("network", "x", 0.05)
    assert t.get("network", "x") == 1.0  # the lower bound min(1 s, default)
    assert t.observe_timeout("network", "x") == 2.0
    assert t.observe_timeout("network", "x") == 4.0
    for _ in range(30):
        t.observe_success("network", "x", 8.0)  # a slow spell
    slow = t.get("network", "x")
    assert 8.0 < slow <= 100.0
    for _ in range(30):
        t.observe_success("network", "x", 0.5)
    assert t.get("network", "x") < slow / 4  # and it comes down again
    for _ in range(20):
        t.observe_timeout("network", "x")
    assert t.get("network", "x") == 100.0  # capped at 10 x default


async def test_timeout_outcome_is_learned_end_to_end(tmp_path: Path) -> None:
    integ = EnhancedErrorHandlingIntegration(None, validate_config({
        "database": str(tmp_path / "t.duckdb"), "auto_recover": False, "builtin_strategies": [],
        "default_timeout": 0.2, "escalation_backoff": 0, "max_recovery_level": 1}))
    integ.add_custom_strategy("slow", SyntheticStrategy("slow", L, lambda e, s: 1.0, random.Random(1), sleep=5))
    await integ.start()
    try:
        ok, info = await integ.handle_error("x", {"component": "c", "error_type": "timeout"})
        assert not ok and info["attempts"][0]["outcome"] == "timeout"
        assert integ.timeouts.get("timeout", "slow") == 0.4
    finally:
        await integ.stop()


def test_budget_is_a_sliding_window() -> None:
    now = [0.0]
    b = RecoveryBudget(limit=3, window=10.0, global_limit=5, clock=lambda: now[0])
    assert all(b.try_acquire("c1") for _ in range(3))
    assert not b.try_acquire("c1") and b.retry_after("c1") == 10.0
    assert b.try_acquire("c2") and b.try_acquire("c2")
    assert not b.try_acquire("c3")  # the global limit
    now[0] = 10.0
    assert b.try_acquire("c1")


async def test_budget_caps_a_burst_and_deferred_recoveries_run_later(tmp_path: Path) -> None:
    runs: list[float] = []

    def truth(et: str, sid: str) -> float:
        runs.append(time.monotonic())
        return 1.0

    integ = await farm_of(tmp_path, {}, {}, auto_recover=True, recovery_budget=4, budget_window=0.5)
    integ.add_custom_strategy("heavy", SyntheticStrategy("heavy", H, truth, random.Random(3)))
    try:
        reports = []
        for i in range(1000):  # 1,000 errors over 20 groups from one component
            kind = "abcdefghijklmnopqrst"[i % 20]
            reports.append(await integ.report_error(f"disk controller {kind}{kind} failed", {"component": "disk"}))
        groups = {r.error_id: r for r in reports}
        assert len(groups) == 20
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(r.is_open for r in groups.values()):
            await asyncio.sleep(0.1)
        assert not any(r.is_open for r in groups.values()), "deferred recoveries never ran"
        runs.sort()
        worst = max(sum(1 for t in runs if s <= t < s + 0.5) for s in runs)
        assert worst <= 4 and len(runs) == 20
        assert integ.budget.refused > 0
        assert integ.recovery_manager.counts.get("budget_exhausted", 0) > 0
        diag = await integ.run_diagnostics()
        assert diag["budget"]["refused"] == integ.budget.refused
    finally:
        await integ.stop()


async def test_learned_state_survives_a_restart(tmp_path: Path) -> None:
    truth = {("network", "a"): 0.3, ("network", "b"): 0.8, ("database", "a"): 0.0, ("database", "b"): 0.0}
    integ = await farm_of(tmp_path, truth, {"a": L, "b": L}, max_recovery_level=3)
    for n in range(30):
        await incident(integ, "network", n)
    ok, failed = await integ.handle_error("db down hard", {"component": "db", "error_type": "database"})
    assert not ok
    arms = {k: (a.n, a.successes) for k, a in integ.performance_recovery.arms.items()}
    timeouts = integ.timeouts.snapshot()
    level = integ.recovery_manager.levels[failed["error_id"]].level
    assert level == 2  # the highest level at which a strategy ran (level 3 has none)
    await integ.stop()
    again = await farm_of(tmp_path, truth, {"a": L, "b": L}, max_recovery_level=3)
    try:
        assert {k: (a.n, a.successes) for k, a in again.performance_recovery.arms.items()} == arms
        assert again.timeouts.snapshot() == timeouts
        hist = await again.get_recovery_history(failed["error_id"])
        assert hist is not None and hist["current_level"] == 2 and hist["history"]
        ok, info = await again.handle_error("db down hard", {"component": "db", "error_type": "database"})
        assert info["error_id"] == failed["error_id"]
        assert info["attempts"][0]["level"] == 2  # the next recovery starts where the last one ended
    finally:
        await again.stop()


async def test_a_failed_group_is_retried_after_its_cooldown(tmp_path: Path) -> None:
    """A fault that reports itself once (a stopped loop, a dead process) is not left failed."""
    outcomes = iter([0.0, 1.0])
    current = {"p": next(outcomes)}

    def truth(et: str, sid: str) -> float:
        p = current["p"]
        current["p"] = next(outcomes, 1.0)
        return p

    integ = await farm_of(tmp_path, {}, {}, auto_recover=True, escalation_backoff=0.05, escalation_backoff_max=0.2,
                          max_recovery_level=1)
    integ.add_custom_strategy("fixer", SyntheticStrategy("fixer", L, truth, random.Random(5)))
    try:
        report = await integ.report_error("scheduler loop stopped", {"component": "scheduler"})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and report.resolution_status != "resolved":
            await asyncio.sleep(0.05)
        assert report.resolution_status == "resolved" and report.aggregated_count == 1
        hist = await integ.get_recovery_history(report.error_id)
        assert hist is not None and [h["success"] for h in hist["history"]] == [False, True]
    finally:
        await integ.stop()
