"""Explanations and diagnostics: why each strategy would or would not be chosen, and health."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from coordinator_plugins.error_handling.learning.policy import AdaptivePolicy
from coordinator_plugins.error_handling.strategies.base import LEVEL_STRATEGIES

if TYPE_CHECKING:
    from coordinator_plugins.error_handling.integration import EnhancedErrorHandlingIntegration

# A commit the store made within this long (s) proves it answers: no ping is needed.
COMMIT_PROOF = 1.0
# store -> (its commit count, when diagnostics saw it, when it last saw that count grow: the time
# of the check before, a lower bound of the latest commit's time)
_COMMITS: weakref.WeakKeyDictionary[Any, tuple[int, float, float]] = weakref.WeakKeyDictionary()


def _levels_of(strategy_level: Any) -> list[int]:
    return [lv for lv, allowed in LEVEL_STRATEGIES.items() if strategy_level in allowed]


def recommendations(integ: EnhancedErrorHandlingIntegration, error_type: str) -> list[dict[str, Any]]:
    """Strategies for one error type, best first, with the evidence behind each."""
    rm = integ.recovery_manager
    perf = integ.performance_recovery
    out: list[dict[str, Any]] = []
    for sid, s in rm.strategies.items():
        arm = perf.arms.get((error_type, sid))
        means = arm.means() if arm else {}
        score = perf.score(error_type, sid)
        out.append(
            {
                "strategy_id": sid,
                "strategy_name": s.name,
                "level": s.level.value,
                "progressive_levels": _levels_of(s.level),
                "samples": arm.n if arm else 0,
                "total_runs": arm.total if arm else 0,
                "success_rate": means.get("success_rate"),
                "avg_execution_time": means.get("execution_time"),
                "score": score,
                "timeout": integ.timeouts.get(error_type, sid),
            }
        )
    out.sort(key=lambda r: (r["score"] is None, -(r["score"] or 0.0)))
    return out


def explain_strategies(integ: EnhancedErrorHandlingIntegration, error_type: str | None) -> dict[str, Any]:
    """For each error type: each strategy, its evidence, and why it would or would not run now."""
    rm = integ.recovery_manager
    policy = integ.policy
    known = {k.split("@")[0] for (k, _) in integ.performance_recovery.arms}
    types = [error_type] if error_type else sorted(known | {"network", "worker", "database", "timeout"})
    max_level = integ.config.max_recovery_level
    result: dict[str, Any] = {}
    for et in types:
        entries = {r["strategy_id"]: r for r in recommendations(integ, et)}
        start_level, start_reason = 1, "new groups start at level 1"
        first: list[dict[str, Any]] = []
        if isinstance(policy, AdaptivePolicy):
            first = policy.first_choices(et, list(rm.strategies.values()), max_level)
            if first:
                start_level = first[0]["level"]
                start_reason = (
                    f"a new group most likely starts at level {start_level} with {first[0]['strategy_id']} "
                    f"(probability {first[0]['probability']:.2f}); the first strategy is drawn among every "
                    "strategy that can run below level 5"
                )
            for row in first:
                entries[row["strategy_id"]]["first_choice"] = {"level": row["level"], "probability": row["probability"]}
        for level in range(1, max_level + 1):
            cands = [s for s in rm.strategies.values() if s.level in LEVEL_STRATEGIES[level]]
            for row in policy.explain(cands, et, level):
                entries[row["strategy_id"]].setdefault("by_level", {})[str(level)] = row
        for entry in entries.values():
            entry["why"] = _why(entry, policy.name)
        result[et] = {
            "start_level": start_level,
            "start_reason": start_reason,
            "first_choice": first,
            "evidence": policy.key_summary(et) if isinstance(policy, AdaptivePolicy) else {},
            "strategies": list(entries.values()),
        }
    return {
        "selection": policy.name,
        "error_types": result,
        "recent_decisions": list(rm.decisions)[-20:],
        "budget": integ.budget.status(),
    }


def _why(entry: dict[str, Any], policy: str) -> str:
    levels = entry["progressive_levels"]
    if policy == "ladder":
        return f"runs in registration order at levels {levels}"
    first = entry.get("first_choice")
    opening = (
        f"; first for a new group with probability {first['probability']:.2f} (at level {first['level']})"
        if first
        else ("; never first: it runs only at level 5, after the levels below failed" if policy == "adaptive" else "")
    )
    n = entry["samples"]
    if n == 0:
        return (
            "untried: scored as a neutral 0.5"
            if policy == "score"
            else "untried: its prior gives it a chance to be explored" + opening
        )
    sr = entry["success_rate"] or 0.0
    probs = [v.get("choice_probability") for v in entry.get("by_level", {}).values() if "choice_probability" in v]
    chance = f"; chosen at a level it shares with others with probability up to {max(probs):.2f}" if probs else ""
    return f"{sr:.0%} success over its last {n} runs, score {entry['score']:.3f}{opening}{chance}"


def _committed_lately(store: Any, commits: int) -> bool:
    """Whether the store committed within the last COMMIT_PROOF seconds, as far as the commit
    counts seen by successive diagnostics tell (False the first time, and when idle)."""
    now = time.monotonic()
    count, seen, grew = _COMMITS.get(store, (-1, 0.0, float("-inf")))
    if commits > count >= 0:
        grew = seen  # the commits that made the difference came after that check
    try:
        _COMMITS[store] = (commits, now, grew)
    except TypeError:  # a store without weak references: always ping
        return False
    return now - grew <= COMMIT_PROOF


async def _coordinator_health(actions: Any) -> Any:
    """The coordinator's health, or the exception its check raised."""
    try:
        return await actions.health()
    except Exception as exc:
        return exc


async def diagnostics(integ: EnhancedErrorHandlingIntegration) -> dict[str, Any]:
    """The plugin's health, answered from what is in memory but for what needs another thread or
    the database: the coordinator's health, the fleet's members (with a fleet) and a ping of the
    store unless it just committed. During a storm every such wait costs turns of a loop busy with
    hundreds of connections (and a ping waits behind a commit in the database): one wait is
    awaited as it is, several side by side; nothing is wrapped in a task that would cost a turn
    of its own."""
    issues: list[str] = []
    status = "healthy"
    store = integ.store.status().to_dict()
    waits: dict[str, Awaitable[Any]] = {}
    if store["ok"] and not _committed_lately(integ.store, int(store.get("commits") or 0)):
        waits["ping"] = integ.store.ping()
    actions = integ.actions
    if actions is not None and callable(getattr(actions, "health", None)):
        waits["health"] = _coordinator_health(actions)
    if integ.fleet is not None:
        waits["fleet"] = integ.fleet_members()
    if len(waits) > 1:
        got = dict(zip(waits, await asyncio.gather(*waits.values()), strict=True))
    else:
        got = {name: await aw for name, aw in waits.items()}
    if "ping" in got:
        store["ok"] = bool(got["ping"])
    file_issues = list(store["issues"])
    if not store["ok"]:
        status = "critical" if store["failing_for_seconds"] > 30 else "degraded"
        if not file_issues:
            issues.append(f"store is failing ({store['last_error']}); writes are buffered in memory")
    if file_issues:  # the database file was deleted or replaced (and rebuilt, or not yet)
        status = "degraded" if status == "healthy" else status
        issues.extend(file_issues)
    skipped = max(int(store.get("skipped_rows") or 0), integ.restore_skipped)
    store["skipped_rows"] = skipped
    if skipped:  # counted, not fatal: the rest was restored
        status = "degraded" if status == "healthy" else status
        issues.append(f"{skipped} stored row(s) could not be read at startup and were skipped")
    if store.get("dropped_writes"):
        status = "degraded" if status == "healthy" else status
        issues.append(f"{store['dropped_writes']} write(s) refused by the database on their data were dropped")
    if store.get("fallback"):
        status = "degraded"
        issues.append(f"database fell back to memory: {store['fallback']}; nothing survives a restart")
    budget = integ.budget.status()
    if budget["exhausted"]:
        status = "degraded" if status == "healthy" else status
        issues.append(f"recovery budget exhausted for: {', '.join(budget['exhausted'])}")
    metrics = await integ.get_error_metrics()
    rm = integ.recovery_manager
    active = rm.active_levels()
    if any(lv >= 5 for lv in active.values()):
        status = "degraded" if status == "healthy" else status
        issues.append(f"{sum(1 for lv in active.values() if lv >= 5)} group(s) reached level 5")
    stopped = rm.stopped_groups()
    if stopped:  # a dead letter: recovery of these groups does not hold, and has stopped
        status = "degraded" if status == "healthy" else status
        for error_id, reason in list(stopped.items())[:20]:
            group = integ.error_handler.groups.get(error_id)
            what = f" ({group.message[:80]})" if group is not None else ""
            issues.append(f"error group {error_id}{what}: {reason}")
        if len(stopped) > 20:
            issues.append(f"{len(stopped) - 20} more error group(s) whose recovery does not hold")
    critical_open = integ.error_handler.groups.critical_open  # a counter, not a walk
    if critical_open:
        status = "critical" if critical_open >= 3 else ("degraded" if status == "healthy" else status)
        issues.append(f"{critical_open} open critical error group(s)")
    coordinator: dict[str, Any] | None = None
    if "health" in got:
        answer = got["health"]
        if isinstance(answer, Exception):
            issues.append(f"coordinator health check failed: {answer!r}")
        else:
            coordinator = answer
            if not coordinator.get("healthy", True):
                status = "degraded" if status == "healthy" else status
                bad = [n for n, ok in (coordinator.get("components") or {}).items() if not ok]
                issues.append("coordinator unhealthy" + (f": {', '.join(bad)} down" if bad else ""))
    return {
        "status": status,
        "issues": issues,
        "error_metrics": metrics,
        "recovery_metrics": {
            "recoveries": rm.recoveries,
            "successes": rm.successes,  # successes that held through verify_window
            "provisional": len(rm.probation),
            "recurred": rm.probation.recurred,
            "poison_tasks": rm.poisoned,
            "stopped_groups": sorted(stopped),
            "outcomes": dict(rm.counts),
            "in_flight": len(rm.inflight),
            "deferred": len(rm.deferred),
            "strategies": list(rm.strategies),
            "selection": integ.policy.name,
        },
        "active_recovery_levels": active,
        "database": store,
        "budget": budget,
        "coordinator": coordinator,
        "resources": integ.sampler.latest(),
        "timeouts": integ.timeouts.snapshot(),
        # the live coordinators sharing the database (SPEC 10); this one alone without a fleet
        "fleet": got["fleet"] if "fleet" in got else await integ.fleet_members(),
        "fleet_status": integ.fleet.status() if integ.fleet is not None else None,
    }
