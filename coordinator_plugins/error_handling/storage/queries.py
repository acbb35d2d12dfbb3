"""Read queries against the store (run on the store's reader thread, never on the loop)."""

from __future__ import annotations

import gc
import json
from datetime import UTC, datetime
from typing import Any

from coordinator_plugins.error_handling.model import (
    LIST_ITEM_FIELDS,
    ErrorCategory,
    ErrorContext,
    ErrorReport,
    ErrorSeverity,
    ErrorType,
    ResolutionStatus,
    iso,
)
from coordinator_plugins.error_handling.storage.duckdb_store import Cursor
from coordinator_plugins.error_handling.storage.order import GroupOrder, from_micros, parse_cursor_time
from coordinator_plugins.error_handling.storage.schema import GROUP_COLUMNS

LIST_FIELDS = (
    *LIST_ITEM_FIELDS,
    "worker_id",
    "task_id",
    "hardware_id",
    "exception_type",
    "resolution_strategy",
    "resolution_time",
    "regression_count",
)
_SELECT_GROUP = "SELECT " + ", ".join(GROUP_COLUMNS) + " FROM error_reports"
# The same columns with the timestamps as epoch microseconds, for reading many groups at once.
_SELECT_GROUPS_FAST = "SELECT " + ", ".join(
    f"epoch_us({c})" if c in ("first_seen", "last_seen", "resolution_time") else c for c in GROUP_COLUMNS
) + " FROM error_reports"
# Groups restored into memory at startup (the most recent); the others come from the store when
# they recur (exact either way), so startup does not grow with max_groups_in_memory.
STARTUP_GROUPS = 10_000


def _row_dict(columns: tuple[str, ...], row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(columns, row, strict=True))
    for k, v in out.items():
        if isinstance(v, datetime):
            out[k] = iso(v)
    for k in ("metadata", "recovery_details"):
        if isinstance(out.get(k), str):
            try:
                out[k] = json.loads(out[k])
            except ValueError:
                pass
    out.pop("severity_rank", None)
    return out


_TYPES = ErrorType._value2member_map_
_SEVERITIES = ErrorSeverity._value2member_map_
_CATEGORIES = ErrorCategory._value2member_map_
_STATUSES = ResolutionStatus._value2member_map_


def _ts(v: Any) -> datetime:
    if isinstance(v, int):  # epoch_us(...): ten times cheaper to fetch than a TIMESTAMPTZ
        return from_micros(v)
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=UTC)
    return datetime.fromisoformat(v) if v else datetime.now(UTC)


def _json_dict(v: Any) -> dict[str, Any]:
    if isinstance(v, str):
        return json.loads(v) if v != "{}" else {}
    return v or {}


def report_from_row(d: dict[str, Any]) -> ErrorReport:
    return report_from_tuple(tuple(d.get(c) for c in GROUP_COLUMNS))


def report_from_tuple(row: tuple[Any, ...]) -> ErrorReport:
    """A group from a row of GROUP_COLUMNS, with as little Python per row as it takes."""
    (error_id, fp, error_type, severity, _rank, category, message, component, operation, worker_id, task_id,
     hardware_id, exception_type, stack_trace, metadata, first_seen, last_seen, count, retry_count,
     retry_successful, status, resolution_time, resolution_strategy, regression_count, recovery_level,
     recovery_details) = row
    first = _ts(first_seen)
    return ErrorReport(
        error_id=error_id,
        error_type=_TYPES.get(error_type) or ErrorType(error_type),  # type: ignore[arg-type]
        error_severity=_SEVERITIES.get(severity) or ErrorSeverity(severity),  # type: ignore[arg-type]
        message=message or "",
        context=ErrorContext(
            component=component or "unknown",
            operation=operation or "unknown",
            timestamp=first,
            worker_id=worker_id,
            task_id=task_id,
            hardware_id=hardware_id,
            stack_trace=stack_trace,
            metadata=_json_dict(metadata),
        ),
        category=_CATEGORIES.get(category) or ErrorCategory(category),  # type: ignore[arg-type]
        fingerprint=fp or "",
        exception_type=exception_type,
        retry_count=retry_count or 0,
        retry_successful=retry_successful,
        aggregated_count=count or 1,
        resolution_status=_STATUSES.get(status or "open") or ResolutionStatus(status),  # type: ignore[arg-type]
        resolution_time=_ts(resolution_time) if resolution_time else None,
        resolution_strategy=resolution_strategy,
        recovery_details=_json_dict(recovery_details),
        first_seen=first,
        last_seen=_ts(last_seen),
        regression_count=regression_count or 0,
        recovery_level=recovery_level or 1,
        new_group=False,
        persisted=True,
    )


# Occurrences newer than their group's last_seen are the ones the group's row does not count yet.
_RECONCILE = """
UPDATE error_reports SET
    aggregated_count = aggregated_count + m.n,
    last_seen = m.newest,
    resolution_status = CASE WHEN m.reopen THEN 'open' ELSE resolution_status END,
    resolution_time = CASE WHEN m.reopen THEN NULL ELSE resolution_time END,
    regression_count = regression_count + CASE WHEN m.reopen THEN 1 ELSE 0 END
FROM (
    SELECT o.error_id, count(*) AS n, max(o.occurred_at) AS newest,
           coalesce(max(o.occurred_at) > any_value(r.resolution_time), false) AS reopen
    FROM error_occurrences o JOIN error_reports r USING (error_id)
    WHERE o.occurred_at > r.last_seen GROUP BY o.error_id
) AS m
WHERE error_reports.error_id = m.error_id
"""


def reconcile_counts(cur: Cursor) -> int:
    """Count into each group the occurrences its row does not include yet, in one statement.

    Group rows are written lazily, occurrences always before their acknowledgement; after a
    crash, occurrences newer than a group's ``last_seen`` are the ones its count is missing.
    A resolved group with such occurrences after its resolution is open again (a regression)."""
    row = cur.execute(_RECONCILE).fetchone()
    return int(row[0]) if row else 0


_RECENT = "(resolution_status <> 'resolved' OR resolution_time > now() - to_seconds(?))"


def load_state(cur: Cursor, regression_window: float, max_groups: int) -> dict[str, Any]:
    """Everything the plugin restores at startup: the ``max_groups`` most recent open (or
    recently resolved) groups, the fingerprints of the others (looked up when they recur), and
    the counts of open groups."""
    reconciled = reconcile_counts(cur)
    window = float(regression_window)
    max_groups = min(max_groups, STARTUP_GROUPS)
    rows = cur.execute(
        _SELECT_GROUPS_FAST + " WHERE " + _RECENT + " ORDER BY last_seen DESC LIMIT ?", [window, max_groups]
    ).fetchall()
    collecting = gc.isenabled()
    gc.disable()  # thousands of new objects at once: the collector would walk them again and again
    try:
        groups = [report_from_tuple(r) for r in rows]
    finally:
        if collecting:
            gc.enable()
    # The fingerprints of the recent groups left in the store (most of them, usually none).
    stored = [
        r[0]
        for r in cur.execute(
            "SELECT fingerprint FROM error_reports WHERE " + _RECENT + " AND error_id NOT IN "
            "(SELECT error_id FROM error_reports WHERE " + _RECENT + " ORDER BY last_seen DESC LIMIT ?)",
            [window, window, max_groups],
        ).fetchall()
    ] if len(rows) >= max_groups else []
    open_total, critical_open = cur.execute(
        "SELECT count(*) FILTER (WHERE resolution_status <> 'resolved'), "
        "count(*) FILTER (WHERE resolution_status <> 'resolved' AND error_severity = 'critical') FROM error_reports"
    ).fetchone() or (0, 0)
    # Stopped recoveries stay stopped, in memory or not.
    stopped = cur.execute(
        "SELECT error_id, json_extract_string(recovery_details, '$.stopped') FROM error_reports "
        "WHERE resolution_status <> 'resolved' AND json_extract_string(recovery_details, '$.stopped') IS NOT NULL"
    ).fetchall()
    ids = [g.error_id for g in groups] + [e for e, _ in stopped]
    levels = (
        cur.execute(
            "SELECT error_id, current_level, epoch(last_updated), history FROM progressive_recovery "
            "WHERE error_id IN (SELECT unnest(?::VARCHAR[]))",
            [ids],
        ).fetchall()
        if ids
        else []
    )
    scores = cur.execute("SELECT error_type, strategy_id, metrics FROM strategy_scores").fetchall()
    timeouts = cur.execute(
        "SELECT error_type, strategy_id, timeout, srtt, rttvar, samples FROM adaptive_timeouts"
    ).fetchall()
    learner = cur.execute("SELECT key, state FROM learner_state").fetchall()
    return {
        "groups": groups,
        "stored_fingerprints": stored,
        "open_total": int(open_total),
        "critical_open": int(critical_open),
        "stopped": stopped,
        "levels": levels,
        "scores": scores,
        "timeouts": timeouts,
        "learner": learner,
        "reconciled": reconciled,
    }


def find_groups(cur: Cursor, fingerprints: list[str]) -> dict[str, tuple[ErrorReport, tuple[Any, ...] | None]]:
    """fingerprint -> (its group, open first else the one seen last; its level row: current_level,
    epoch of last_updated, history) for those of ``fingerprints`` the store holds. One
    fingerprint goes by the index (no ORDER BY: with one, DuckDB reads the full row through a join
    over the whole table); several in one statement."""
    if len(fingerprints) == 1:
        rows = cur.execute(_SELECT_GROUPS_FAST + " WHERE fingerprint = ?", fingerprints).fetchall()
    else:
        rows = cur.execute(_SELECT_GROUPS_FAST + " WHERE fingerprint IN (SELECT unnest(?::VARCHAR[]))",
                           [fingerprints]).fetchall()
    fp_at, status, last_seen = (GROUP_COLUMNS.index(c) for c in ("fingerprint", "resolution_status", "last_seen"))
    best: dict[str, tuple[Any, ...]] = {}
    for row in rows:
        old = best.get(row[fp_at])
        if old is None or (row[status] != "resolved", row[last_seen]) > (old[status] != "resolved", old[last_seen]):
            best[row[fp_at]] = row
    if not best:
        return {}
    reports = {fp: report_from_tuple(row) for fp, row in best.items()}
    ids = [r.error_id for r in reports.values()]
    levels = {row[0]: row[1:] for row in cur.execute(
        "SELECT error_id, current_level, epoch(last_updated), history FROM progressive_recovery "
        + ("WHERE error_id = ?" if len(ids) == 1 else "WHERE error_id IN (SELECT unnest(?::VARCHAR[]))"),
        ids if len(ids) == 1 else [ids]).fetchall()}
    return {fp: (r, levels.get(r.error_id)) for fp, r in reports.items()}


def get_group(cur: Cursor, error_id: str) -> dict[str, Any] | None:
    row = cur.execute(_SELECT_GROUP + " WHERE error_id = ?", [error_id]).fetchone()
    return _row_dict(GROUP_COLUMNS, row) if row else None


_ORDER_ROWS = (
    "SELECT error_id, epoch_us(last_seen), resolution_status <> 'resolved', component, severity_rank, error_type, "
    "rowid FROM error_reports ORDER BY last_seen, error_id"
)
_TIMES = ("first_seen", "last_seen", "resolution_time")
_PAGE_ROWS = "SELECT rowid, " + ", ".join(f"epoch_us({c})" if c in _TIMES else c for c in LIST_FIELDS) + (
    " FROM error_reports WHERE ")
_PAGE_TIMES = tuple(i for i, c in enumerate(LIST_FIELDS) if c in _TIMES)


def _page_item(row: tuple[Any, ...]) -> dict[str, Any]:
    """A list item from a page row (its timestamps as epoch microseconds: cheaper to read)."""
    values = list(row)
    for i in _PAGE_TIMES:
        if values[i] is not None:
            values[i] = iso(from_micros(values[i]))
    return dict(zip(LIST_FIELDS, values, strict=True))
_BY_ROWID = _PAGE_ROWS + "rowid = ANY(?::BIGINT[])"  # a little cheaper than IN (SELECT unnest(...))
_BY_ID = _PAGE_ROWS + "error_id IN (SELECT unnest(?::VARCHAR[]))"


def list_groups(
    cur: Cursor,
    order: GroupOrder,
    status: str = "open",
    component: str | None = None,
    min_rank: int | None = None,
    error_type: str | None = None,
    limit: int = 100,
    after: tuple[str, str] | None = None,
) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
    """Newest ``last_seen`` first, keyset-paginated on (last_seen, error_id), through the store's
    sorted view (:mod:`.order`): the page's keys come from memory, its rows by rowid, so any page
    costs what the first does however many groups there are."""
    order.build(lambda: cur.execute(_ORDER_ROWS).fetchall())
    key = (parse_cursor_time(after[0]), after[1]) if after is not None else None
    picked = order.page(status, component, min_rank, error_type, limit + 1, key)
    page = picked[:limit]
    rows: dict[str, tuple[Any, ...]] = {}
    known = [rowid for _, rowid, _ in page if rowid is not None]
    if known:
        for row in cur.execute(_BY_ROWID, [known]).fetchall():
            rows[row[1]] = row
    missing = [error_id for error_id, _, _ in page if error_id not in rows]
    if missing:  # new groups (their rowid is learned here), or a rowid that moved
        found = cur.execute(_BY_ID, [missing]).fetchall()
        order.set_rowids((row[1], row[0]) for row in found)
        rows.update((row[1], row) for row in found)
    items = [_page_item(rows[error_id][1:]) for error_id, _, _ in page if error_id in rows]
    nxt = None
    if len(picked) > limit and page:
        error_id, _, ls = page[-1]
        nxt = (iso(from_micros(ls)) or "", error_id)
    return items, nxt


def level_row(cur: Cursor, error_id: str) -> tuple[int, list[Any]] | None:
    row = cur.execute(
        "SELECT current_level, history FROM progressive_recovery WHERE error_id = ?", [error_id]
    ).fetchone()
    if row is None:
        return None
    hist = json.loads(row[1]) if isinstance(row[1], str) else (row[1] or [])
    return int(row[0]), hist


def history_summary(cur: Cursor, limit: int) -> dict[str, Any]:
    rows = cur.execute(
        "SELECT error_id, current_level, last_updated, json_array_length(history) FROM progressive_recovery "
        "ORDER BY last_updated DESC LIMIT ?",
        [limit],
    ).fetchall()
    by_level = dict(cur.execute("SELECT current_level, count(*) FROM progressive_recovery GROUP BY 1").fetchall())
    return {
        "errors": [
            {"error_id": r[0], "current_level": r[1], "last_updated": iso(r[2]), "recoveries": r[3]} for r in rows
        ],
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
    strategies = {}
    for sid, name, n, ok, t, imp, stab, aff, rec, tmo in rows:
        strategies[sid] = {
            "strategy_name": name,
            "total_executions": n,
            "successes": int(ok or 0),
            "success_rate": (ok or 0) / n if n else 0.0,
            "avg_execution_time": t,
            "avg_impact_score": imp,
            "avg_stability_score": stab,
            "affected_tasks": int(aff or 0),
            "recovered_tasks": int(rec or 0),
            "task_recovery_rate": (rec / aff) if aff else None,
            "timeouts": tmo,
        }
    per_type = cur.execute(
        "SELECT error_type, strategy_id, count(*), avg(success::INT), avg(execution_time) FROM recovery_performance"
        + w
        + " GROUP BY 1, 2",
        params,
    ).fetchall()
    top: dict[str, dict[str, Any]] = {}
    for et, sid, n, rate, t in per_type:
        cur_best = top.get(et)
        if cur_best is None or (rate, -t) > (cur_best["success_rate"], -cur_best["avg_execution_time"]):
            top[et] = {"strategy_id": sid, "success_rate": rate, "avg_execution_time": t, "executions": n}
    total = sum(s["total_executions"] for s in strategies.values())
    succ = sum(s["successes"] for s in strategies.values())
    outcomes = dict(
        cur.execute("SELECT outcome, count(*) FROM recovery_performance" + w + " GROUP BY 1", params).fetchall()
    )
    return {
        "strategies": strategies,
        "top_strategies": top,
        "overall": {
            "total_executions": total,
            "overall_success_rate": succ / total if total else 0.0,
            "successes": succ,
            "outcomes": outcomes,
            "days": days,
        },
    }


def unresolved(cur: Cursor, component: str | None, min_rank: int | None) -> list[dict[str, Any]]:
    where, params = _filters("open", component, min_rank, None)
    rows = cur.execute(_SELECT_GROUP + " WHERE " + " AND ".join(where) + " ORDER BY last_seen DESC", params).fetchall()
    return [_row_dict(GROUP_COLUMNS, r) for r in rows]


def _filters(
    status: str, component: str | None, min_rank: int | None, error_type: str | None
) -> tuple[list[str], list[Any]]:
    """WHERE clauses and their parameters (never values pasted into SQL)."""
    where: list[str] = []
    params: list[Any] = []
    if status == "open":
        where.append("resolution_status <> 'resolved'")
    elif status == "resolved":
        where.append("resolution_status = 'resolved'")
    for column, value in (("component", component), ("severity_rank", min_rank), ("error_type", error_type)):
        if value is not None:
            where.append(f"{column} {'>=' if column == 'severity_rank' else '='} ?")
            params.append(value)
    return where, params


_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def occurrence_series(cur: Cursor, error_id: str, buckets: int, window: float | None) -> dict[str, Any] | None:
    """One group's stored occurrences counted per time bucket, from its first occurrence (or the
    last ``window`` seconds) to now; buckets of a round number of seconds, aligned to the clock.
    None for an unknown group."""
    row = cur.execute("SELECT epoch(first_seen), epoch(now()) FROM error_reports WHERE error_id = ?",
                      [error_id]).fetchone()
    if row is None:
        return None
    first, now = float(row[0]), float(row[1])
    since = now - window if window is not None else min(first, now - 60.0)
    day = float(_STEPS[-1])
    steps = [*_STEPS, *(day * k for k in range(2, 1 + int(-(-(now - since) // (day * max(1, buckets - 1))))))]
    for step in steps:  # the smallest round step whose clock-aligned buckets cover the range
        start = (since // step) * step
        n = max(1, int(-(-(now - start) // step)))
        if n <= buckets:
            break
    counts = [0] * n
    for b, c in cur.execute(
        "SELECT floor((epoch(occurred_at) - ?) / ?)::BIGINT, count(*) FROM error_occurrences "
        "WHERE error_id = ? AND occurred_at >= to_timestamp(?) GROUP BY 1",
        [start, step, error_id, start],
    ).fetchall():
        if 0 <= b < n:
            counts[b] += int(c)
    return {
        "error_id": error_id,
        "start": iso(datetime.fromtimestamp(start, UTC)),
        "end": iso(datetime.fromtimestamp(now, UTC)),
        "step_seconds": step,
        "counts": counts,
        "total": sum(counts),
    }
