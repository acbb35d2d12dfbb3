"""Read queries of the DuckDB store over recovery runs and occurrences: strategy performance,
the recovery timeline, occurrence series, and totals (run on the reader thread)."""

from __future__ import annotations

from typing import Any

from coordinator_plugins.error_handling.model import iso
from coordinator_plugins.error_handling.storage.duckdb.queries import Cursor, _json, _ts
from coordinator_plugins.error_handling.storage.duckdb.schema import PERF_COLUMNS
from coordinator_plugins.error_handling.storage.records import (
    OccurrenceRecord,
    StoreTotals,
    StrategyRun,
    StrategyScore,
    TimeoutRecord,
)
from coordinator_plugins.error_handling.storage.sqlshared import (
    history_item,
    performance_answer,
    series_answer,
    series_span,
)


def history_summary(cur: Cursor, limit: int) -> dict[str, Any]:
    rows = cur.execute(
        "SELECT error_id, current_level, last_updated, json_array_length(history), json_extract(history, '$[#-1]') "
        "FROM progressive_recovery ORDER BY last_updated DESC LIMIT ?",
        [limit],
    ).fetchall()
    by_level = dict(cur.execute("SELECT current_level, count(*) FROM progressive_recovery GROUP BY 1").fetchall())
    return {
        "errors": [history_item(r[0], r[1], iso(r[2]), r[3], _json(r[4], None)) for r in rows],
        "summary": {"groups": sum(by_level.values()), "by_level": {str(k): v for k, v in sorted(by_level.items())}},
    }


def performance_metrics(cur: Cursor, error_type: str | None, strategy_id: str | None, days: int) -> dict[str, Any]:
    where: list[str] = ["timestamp > now() - to_days(?)"]
    params: list[Any] = [int(days)]
    if error_type is not None:
        where.append("error_type = ?")
        params.append(error_type)
    if strategy_id is not None:
        where.append("strategy_id = ?")
        params.append(strategy_id)
    w = " WHERE " + " AND ".join(where)
    rows = cur.execute(
        "SELECT strategy_id, any_value(strategy_name), count(*), sum(success::INT), avg(execution_time), "
        "avg(impact_score), avg(stability_score), sum(affected_tasks), sum(recovered_tasks), "
        "count(*) FILTER (WHERE outcome = 'timeout') FROM recovery_performance" + w + " GROUP BY strategy_id",
        params,
    ).fetchall()
    per_type = cur.execute(
        "SELECT error_type, strategy_id, count(*), avg(success::INT), avg(execution_time) FROM recovery_performance"
        + w
        + " GROUP BY 1, 2",
        params,
    ).fetchall()
    outcomes = dict(
        cur.execute("SELECT outcome, count(*) FROM recovery_performance" + w + " GROUP BY 1", params).fetchall()
    )
    return performance_answer(rows, per_type, outcomes, days)


def occurrences(cur: Cursor, error_id: str, limit: int) -> list[OccurrenceRecord]:
    rows = cur.execute(
        "SELECT error_id, occurred_at, message, worker_id, task_id, hardware_id, metadata FROM error_occurrences "
        "WHERE error_id = ? ORDER BY occurred_at DESC LIMIT ?",
        [error_id, limit],
    ).fetchall()
    return [OccurrenceRecord(r[0], _ts(r[1]), r[2] or "", r[3], r[4], r[5], _json(r[6], None)) for r in rows]


def strategy_runs(cur: Cursor, error_id: str | None, limit: int) -> list[StrategyRun]:
    sql = "SELECT " + ", ".join(PERF_COLUMNS) + " FROM recovery_performance"
    params: list[Any] = []
    if error_id is not None:
        sql += " WHERE error_id = ?"
        params.append(error_id)
    rows = cur.execute(sql + " ORDER BY id DESC LIMIT ?", [*params, limit]).fetchall()
    out = []
    for r in rows:
        d = dict(zip(PERF_COLUMNS, r, strict=True))
        out.append(StrategyRun(
            strategy_id=d["strategy_id"], strategy_name=d["strategy_name"] or "", error_type=d["error_type"] or "",
            execution_time=float(d["execution_time"] or 0.0), success=bool(d["success"]),
            affected_tasks=int(d["affected_tasks"] or 0), recovered_tasks=int(d["recovered_tasks"] or 0),
            impact_score=float(d["impact_score"] or 0.0), stability_score=float(d["stability_score"] or 0.0),
            outcome=d["outcome"] or "", error_id=d["error_id"], level=int(d["level"] or 1),
            hardware_id=d["hardware_id"], resource_usage=_json(d["resource_usage"], {}),
            context=_json(d["context"], {}), timestamp=_ts(d["timestamp"]),
        ))
    return out


def strategy_scores(cur: Cursor) -> list[StrategyScore]:
    rows = cur.execute(
        "SELECT error_type, strategy_id, score, samples, metrics, last_updated FROM strategy_scores "
        "ORDER BY error_type, strategy_id"
    ).fetchall()
    return [StrategyScore(k, s, float(sc or 0), int(n or 0), _json(m, {}), _ts(u)) for k, s, sc, n, m, u in rows]


def timeouts(cur: Cursor) -> list[TimeoutRecord]:
    rows = cur.execute(
        "SELECT error_type, strategy_id, timeout, srtt, rttvar, samples, last_updated FROM adaptive_timeouts "
        "ORDER BY error_type, strategy_id"
    ).fetchall()
    return [
        TimeoutRecord(e, s, float(t), float(a or 0), float(v or 0), int(n or 0), _ts(u)) for e, s, t, a, v, n, u in rows
    ]


def totals(cur: Cursor) -> StoreTotals:
    groups, aggregated = cur.execute(
        "SELECT count(*), coalesce(sum(aggregated_count), 0) FROM error_reports"
    ).fetchone()
    (occ,) = cur.execute("SELECT count(*) FROM error_occurrences").fetchone()
    (runs,) = cur.execute("SELECT count(*) FROM recovery_performance").fetchone()
    (levels,) = cur.execute("SELECT count(*) FROM progressive_recovery").fetchone()
    return StoreTotals(int(groups), int(occ), int(aggregated), int(runs), int(levels))


def occurrence_series(cur: Cursor, error_id: str, buckets: int, window: float | None) -> dict[str, Any] | None:
    """One group's stored occurrences counted per time bucket, from its first occurrence (or the
    last ``window`` seconds) to now; buckets of a round number of seconds, aligned to the clock.
    None for an unknown group."""
    row = cur.execute("SELECT epoch(first_seen), epoch(now()) FROM error_reports WHERE error_id = ?",
                      [error_id]).fetchone()
    if row is None:
        return None
    first, now = float(row[0]), float(row[1])
    start, step, n = series_span(first, now, buckets, window)
    counts = [0] * n
    for b, c in cur.execute(
        "SELECT floor((epoch(occurred_at) - ?) / ?)::BIGINT, count(*) FROM error_occurrences "
        "WHERE error_id = ? AND occurred_at >= to_timestamp(?) GROUP BY 1",
        [start, step, error_id, start],
    ).fetchall():
        if 0 <= b < n:
            counts[b] += int(c)
    return series_answer(error_id, start, now, step, counts)
