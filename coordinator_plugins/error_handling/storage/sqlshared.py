"""What the two SQL stores (DuckDB, PostgreSQL) build alike, free of either driver: the WHERE
clauses of the group filters the API offers, and the clock-aligned buckets of an occurrence
series and its answer. Each store supplies its own placeholder style and runs its own query."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from coordinator_plugins.error_handling.model import iso

STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def group_filters(
    status: str, component: str | None, min_rank: int | None, error_type: str | None,
    params: list[Any], mark: Callable[[int], str],
) -> list[str]:
    """WHERE clauses for a group query; each value is appended to ``params`` (never pasted into
    SQL) and named by ``mark(its 1-based position)``: ``?`` for DuckDB, ``$n`` for PostgreSQL."""
    where: list[str] = []
    if status == "open":
        where.append("resolution_status <> 'resolved'")
    elif status == "resolved":
        where.append("resolution_status = 'resolved'")
    for column, value in (("component", component), ("severity_rank", min_rank), ("error_type", error_type)):
        if value is not None:
            params.append(value)
            where.append(f"{column} {'>=' if column == 'severity_rank' else '='} {mark(len(params))}")
    return where


def series_span(first: float, now: float, buckets: int, window: float | None) -> tuple[float, float, int]:
    """(start, step, bucket count) of a series from ``first`` (or the last ``window`` seconds) to
    ``now``: the smallest round step whose clock-aligned buckets, at most ``buckets``, cover it."""
    since = now - window if window is not None else min(first, now - 60.0)
    day = float(STEPS[-1])
    steps = [*STEPS, *(day * k for k in range(2, 1 + int(-(-(now - since) // (day * max(1, buckets - 1))))))]
    start, step, n = since, day, 1
    for step in steps:
        start = (since // step) * step
        n = max(1, int(-(-(now - start) // step)))
        if n <= buckets:
            break
    return start, step, n


def series_answer(error_id: str, start: float, now: float, step: float, counts: list[int]) -> dict[str, Any]:
    return {
        "error_id": error_id,
        "start": iso(datetime.fromtimestamp(start, UTC)),
        "end": iso(datetime.fromtimestamp(now, UTC)),
        "step_seconds": step,
        "counts": counts,
        "total": sum(counts),
    }


def history_item(error_id: str, level: int, last_updated: str | None, entries: int | None, last: Any) -> dict[str, Any]:
    """One group of ``GET /recovery/history`` (no id): its level, its history's length as
    ``recoveries`` and, as the seed's tools read it, ``attempts``, and its last entry
    (``last_attempt``, None without one)."""
    n = int(entries or 0)
    return {"error_id": error_id, "current_level": level, "last_updated": last_updated, "recoveries": n,
            "attempts": n, "last_attempt": last if isinstance(last, dict) else None}


def performance_answer(
    strategy_rows: Iterable[Sequence[Any]], type_rows: Iterable[Sequence[Any]], outcomes: dict[str, int], days: int
) -> dict[str, Any]:
    """``GET /recovery/metrics`` from a store's aggregates: ``strategy_rows`` (strategy id, name,
    runs, successes, mean time, mean impact, mean stability, tasks affected, tasks recovered,
    timeouts) and ``type_rows`` (error type, strategy id, runs, success rate, mean time). With the
    fields the seed's tools read: each strategy's ``strategy_id``, each top strategy's
    ``strategy_name``, ``overall.error_type_count`` and ``overall.strategy_count``."""
    strategies: dict[str, dict[str, Any]] = {}
    for sid, name, n, ok, t, imp, stab, aff, rec, tmo in strategy_rows:
        strategies[sid] = {
            "strategy_id": sid, "strategy_name": name, "total_executions": n, "successes": int(ok or 0),
            "success_rate": (ok or 0) / n if n else 0.0, "avg_execution_time": t, "avg_impact_score": imp,
            "avg_stability_score": stab, "affected_tasks": int(aff or 0), "recovered_tasks": int(rec or 0),
            "task_recovery_rate": (rec / aff) if aff else None, "timeouts": tmo,
        }
    top: dict[str, dict[str, Any]] = {}
    for et, sid, n, rate, t in type_rows:
        best = top.get(et)
        if best is None or (rate, -t) > (best["success_rate"], -best["avg_execution_time"]):
            top[et] = {"strategy_id": sid, "strategy_name": strategies.get(sid, {}).get("strategy_name", sid),
                       "success_rate": rate, "avg_execution_time": t, "executions": n}
    total = sum(s["total_executions"] for s in strategies.values())
    succ = sum(s["successes"] for s in strategies.values())
    return {
        "strategies": strategies,
        "top_strategies": top,
        "overall": {"total_executions": total, "overall_success_rate": succ / total if total else 0.0,
                    "successes": succ, "outcomes": outcomes, "days": days, "strategy_count": len(strategies),
                    "error_type_count": len(top)},
    }
