"""Issue 5: progressive recovery that learns."""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration, RecoveryLevel, validate_config
from coordinator_plugins.error_handling.learning.evidence import DISCOUNT, Evidence
from coordinator_plugins.error_handling.learning.performance import PerformanceTracker, Sample
from coordinator_plugins.error_handling.learning.timeouts import AdaptiveTimeouts
from coordinator_plugins.error_handling.recovery.budget import RecoveryBudget
from coordinator_plugins.error_handling.storage.records import StrategyScore
from tests.simulate import SyntheticStrategy

L, M, H, C = RecoveryLevel.LOW, RecoveryLevel.MEDIUM, RecoveryLevel.HIGH, RecoveryLevel.CRITICAL


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


WORLD = {"l1": L, "l2": L, "m1": M, "m2": M, "h1": H, "c1": C}


def first_run(info: dict[str, Any]) -> dict[str, Any]:
    return next(a for a in info["attempts"] if a["outcome"] != "not_applicable")


async def test_adaptive_finds_a_working_high_strategy_and_starts_there(tmp_path: Path) -> None:
    """Issue 13, finding 4: the first strategy is chosen among every strategy below level 5, so a
    group whose fix is a HIGH strategy starts at level 4 without walking up level by level."""
    truth = {("database", s): 0.05 for s in WORLD} | {("database", "h1"): 0.9}
    integ = await farm_of(tmp_path, truth, WORLD, recovery_budget=0)
    try:
        firsts = [first_run(await incident(integ, "database", n)) for n in range(60)]
        late = firsts[-20:]
        # Across 20 seeds: 15-20 of the last 20 start with h1 at level 4, median 19 (the landed
        # policy, which learns its start level by level: 9-19, median 15.5).
        assert sum(1 for a in late if a["strategy_id"] == "h1" and a["level"] == 4) >= 17, firsts
        assert max(a["level"] for a in firsts) <= 4  # never starts at level 5
        info = await incident(integ, "database", 99)
        first = first_run(info)
        if first["strategy_id"] == "h1":
            assert info["skipped_levels"] == [1, 2, 3] and "levels [1, 2, 3] skipped" in info["start_reason"]
            assert "first of a new group" in first["decision"]["reason"]
            assert 0.5 < first["decision"]["probability"] <= 1.0
        # GET /recovery/strategies explains it: each strategy's chance to be first, and at which level
        explained = integ.explain_strategies("database")["error_types"]["database"]
        assert explained["start_level"] == 4 and "h1" in explained["start_reason"]
        opening = {r["strategy_id"]: r for r in explained["first_choice"]}
        assert set(opening) == set(WORLD) - {"c1"}  # CRITICAL runs only at level 5, never first
        assert opening["h1"]["level"] == 4 and opening["h1"]["probability"] > 0.5
        assert opening["l1"]["level"] in (1, 2) and opening["l1"]["probability"] < 0.1
        why = {e["strategy_id"]: e["why"] for e in explained["strategies"]}
        assert "first for a new group with probability" in why["h1"] and "never first" in why["c1"]
    finally:
        await integ.stop()


async def test_only_a_critical_strategy_works_so_groups_start_at_level_4(tmp_path: Path) -> None:
    """Level 5 is never where a group starts (SPEC 3): the shortest way to it is level 4."""
    truth = {("system", s): 0.03 for s in WORLD} | {("system", "c1"): 0.9}
    integ = await farm_of(tmp_path, truth, WORLD, recovery_budget=0)
    try:
        infos = [await incident(integ, "system", n) for n in range(40)]
        assert all(first_run(i)["level"] <= 4 for i in infos)
        late = infos[-20:]
        # Across 20 seeds: 10-18 of the last 20 start at level 4 and they average 2.2-3.2 runs
        # (the ladder always needs 5); the rest are explorations of lower levels.
        assert sum(1 for i in late if first_run(i)["level"] == 4) >= 9
        runs = [len([a for a in i["attempts"] if a["outcome"] != "not_applicable"]) for i in late]
        assert statistics.fmean(runs) <= 3.3, runs
    finally:
        await integ.stop()


async def test_skipped_levels_are_still_explored_now_and_then(tmp_path: Path) -> None:
    """Evidence decays, so a strategy the policy has been skipping is tried again once in a while;
    not so often that the exploration costs much."""
    truth = {("database", s): 0.05 for s in WORLD} | {("database", "h1"): 0.9}
    integ = await farm_of(tmp_path, truth, WORLD, recovery_budget=0)
    try:
        firsts = [first_run(await incident(integ, "database", n)) for n in range(400)]
        low = [a for a in firsts[100:] if a["level"] < 4]
        # Across 8 seeds: 1-5 of incidents 100-399 start below level 4.
        assert 1 <= len(low) <= 15, low
    finally:
        await integ.stop()


@pytest.mark.parametrize(("old", "new"), [("h1", "l2"), ("l1", "m2")])
async def test_adaptive_recovers_after_the_fix_moves_to_another_level(tmp_path: Path, old: str, new: str) -> None:
    """After a shift the policy is back on the new fix within 20 incidents, also when the new fix
    is at a level it had been skipping (its evidence is not frozen)."""
    truth = {("network", s): 0.05 for s in WORLD} | {("network", old): 0.9}
    integ = await farm_of(tmp_path, truth, WORLD, recovery_budget=0)
    try:
        for n in range(60):
            await incident(integ, "network", n)
        truth[("network", old)], truth[("network", new)] = 0.05, 0.9
        picks = [first_run(await incident(integ, "network", 100 + n))["strategy_id"] for n in range(30)]
        # Across 20 seeds: 8-10 of incidents 20-29 after the shift start with the new fix, median
        # 10, in both directions (the landed policy, fix moved down: 0-10, four seeds at most 2;
        # with this test's seed it finds l2 too late).
        assert picks[20:].count(new) >= 8, picks
        shifts = integ.policy.key_summary("network")["shifts_detected"]
        assert [s["strategy_id"] for s in shifts] == [old]
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
    # the budget's own grants, on its own clock: a run may start later than its grant on a
    # loaded machine, so the runs' start times are not what the budget bounds
    grants: list[float] = []
    acquire = integ.budget.try_acquire

    def counted(component: str) -> bool:
        ok = acquire(component)
        if ok:
            grants.append(integ.budget.clock())
        return ok

    integ.budget.try_acquire = counted  # type: ignore[method-assign]
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
        worst = max(sum(1 for t in grants if s <= t < s + 0.5) for s in grants)
        assert worst <= 4 and len(runs) == 20 and len(grants) >= 20
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


async def test_adaptive_evidence_and_first_choice_survive_a_restart(tmp_path: Path) -> None:
    truth = {("database", s): 0.05 for s in WORLD} | {("database", "h1"): 0.9}
    integ = await farm_of(tmp_path, truth, WORLD, recovery_budget=0)
    for n in range(40):
        await incident(integ, "database", n)
    truth[("database", "h1")] = 0.0
    perf = integ.performance_recovery
    h1 = perf.arms[("database", "h1")].evidence
    n = 50
    while h1.cusum == 0 and n < 70:  # a drop half seen: the CUSUM sum is under way
        await incident(integ, "database", n)
        n += 1
    assert h1.cusum > 0 and not h1.changes
    evidence = {k: a.evidence.to_json() for k, a in perf.arms.items()}
    clock = dict(perf.clock)
    first = {r["strategy_id"]: r for r in integ.policy.first_choices("database", strategies_of(integ), 5)}
    await integ.stop()
    truth[("database", "h1")] = 0.9
    again = await farm_of(tmp_path, truth, WORLD, recovery_budget=0)
    try:
        perf = again.performance_recovery
        assert {k: a.evidence.to_json() for k, a in perf.arms.items()} == evidence
        assert perf.clock == clock
        restored = again.policy.first_choices("database", strategies_of(again), 5)
        for row in restored:
            assert row["level"] == first[row["strategy_id"]]["level"]
            assert abs(row["probability"] - first[row["strategy_id"]]["probability"]) < 0.02
        firsts = [first_run(await incident(again, "database", 100 + n)) for n in range(10)]
        assert sum(1 for a in firsts if (a["strategy_id"], a["level"]) == ("h1", 4)) >= 7, firsts
    finally:
        await again.stop()


def strategies_of(integ: EnhancedErrorHandlingIntegration) -> list[Any]:
    return list(integ.recovery_manager.strategies.values())


def test_evidence_is_discounted_on_the_keys_clock() -> None:
    e = Evidence()
    for clock in range(1, 11):
        e.observe(True, clock)
    s, f = e.counts(10)
    assert f == 0 and abs(s - sum(DISCOUNT**k for k in range(10))) < 1e-9
    later = e.counts(10 + round(math.log(0.5) / math.log(DISCOUNT)))
    assert abs(later[0] - s / 2) < 0.05 * s  # half the weight after the half-life
    back = Evidence.from_json(json.loads(json.dumps(e.to_json())))
    assert back.counts(10) == pytest.approx((s, f), abs=1e-5)
    for bad in ({"s": float("nan"), "f": float("inf")}, {"s": -3, "f": None}):
        assert Evidence.from_json(bad).counts(0) == (0.0, 0.0)
    perf = PerformanceTracker()  # a damaged stored row is skipped, the others load
    good = json.dumps({"window": [[1, 0.1, 0, 1, 0, 0]], "evidence": e.to_json()})
    perf.load([StrategyScore("network", "bad", 0.5, 1, json.loads('{"evidence": {"t": 1e400}}')),
               StrategyScore("network", "worse", 0.5, 1, json.loads("[1]")),
               StrategyScore("network", "ok", 0.5, 1, json.loads(good))])
    assert list(perf.by_key["network"]) == ["ok"] and perf.clock["network"] == 10


def test_cusum_detects_a_strategy_that_stopped_working_and_not_a_bad_spell() -> None:
    e = Evidence()
    clock = 0
    for ok in [True] * 9 + [False] + [True] * 20:  # works about 90% of the time
        clock += 1
        assert not e.observe(ok, clock)
    for ok in (False, True, True, False, True, True):  # a bad spell, not a change
        clock += 1
        assert not e.observe(ok, clock)
    alarms = []
    for _ in range(3):
        clock += 1
        alarms.append(e.observe(False, clock))
    assert alarms == [False, False, True]  # three failures in a row for a 90% strategy
    assert e.counts(clock) == (0.0, 3.0) and e.changes == 1
    # a noisy strategy (70%) does not raise false alarms run after run
    rng = random.Random(3)
    noisy = Evidence()
    false_alarms = sum(noisy.observe(rng.random() < 0.7, t) for t in range(1, 1001))
    assert false_alarms <= 3


def test_a_detected_change_discounts_the_keys_other_evidence_only() -> None:
    perf = PerformanceTracker()
    ok, bad = Sample(True, 0.1, 0.0, 1.0, 0, 0), Sample(False, 0.1, 0.0, 1.0, 0, 0)
    for _ in range(20):
        perf.add(["network"], "fix", ok)
        perf.add(["network"], "other", bad)
        perf.add(["database"], "other", bad)
    before = perf.arms[("network", "other")].evidence.counts(perf.clock["network"])
    db = perf.arms[("database", "other")].evidence.to_json()
    for _ in range(3):
        perf.add(["network"], "fix", bad)
    after = perf.arms[("network", "other")].evidence.counts(perf.clock["network"])
    assert perf.arms[("network", "fix")].evidence.changes == 1
    assert after[1] < 0.2 * before[1]
    assert perf.arms[("database", "other")].evidence.to_json() == db


async def test_a_policy_put_on_the_recovery_manager_is_the_one_that_chooses(tmp_path: Path) -> None:
    """The selection benchmarks replace the manager's policy with an oracle once its strategies
    are registered (``recovery_manager.policy = OraclePolicy(...)``): from then on the
    replacement starts each recovery, chooses at each level and learns each level's outcome."""
    from coordinator_plugins.error_handling.learning.policy import Decision, LadderPolicy

    class Last(LadderPolicy):
        """The last candidate not yet run, where the ladder takes the first."""

        name = "last"
        calls: list[str] = []

        def choose(self, candidates: Any, key: str, level: int, tried: set[str]) -> Decision:
            self.calls.append("choose")
            fresh = [s for s in candidates if s.strategy_id not in tried] or list(candidates)
            return Decision(fresh[-1].strategy_id, level, self.name, "last registered", 1.0)

        def record_level(self, key: str, level: int, success: bool) -> None:
            self.calls.append(f"record {level} {success}")

    integ = await farm_of(tmp_path, {("network", "a"): 1.0, ("network", "b"): 1.0}, {"a": L, "b": L},
                          selection="ladder")
    try:
        ok, info = await integ.handle_error("incident one", {"component": "c", "error_type": "network"})
        assert ok and info["strategy_id"] == "a"  # the ladder's choice
        rm = integ.recovery_manager
        rm.policy = Last(integ.performance_recovery, random.Random(1))
        ok, info = await integ.handle_error("incident two", {"component": "c", "error_type": "network"})
        assert ok and info["strategy_id"] == "b", info
        assert info["attempts"][0]["decision"]["policy"] == "last"
        assert Last.calls == ["choose", "record 1 True"]
        assert rm.policy.name == "last"
    finally:
        await integ.stop()
