"""What the two SQL stores (DuckDB, PostgreSQL) build alike, free of either driver: the WHERE
clauses of the group filters the API offers, and the clock-aligned buckets of an occurrence
series and its answer. Each store supplies its own placeholder style and runs its own query."""

from __future__ import annotations

from collections.abc import Callable
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
