"""Read queries against the DuckDB store (run on its reader thread, never on the loop): groups
and the state restored at startup. Rows become records here; no caller sees a row."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from coordinator_plugins.error_handling.model import (
    ErrorCategory,
    ErrorSeverity,
    ErrorType,
    ResolutionStatus,
    iso,
)
from coordinator_plugins.error_handling.storage.records import (
    LIST_FIELDS,
    GroupPage,
    GroupQuery,
    GroupRecord,
    LearnerRecord,
    LevelRecord,
    StoredState,
    StrategyScore,
    TimeoutRecord,
)
from coordinator_plugins.error_handling.storage.schema import GROUP_COLUMNS

logger = logging.getLogger(__name__)
Cursor = Any  # a DuckDB cursor
_SELECT_GROUP = "SELECT " + ", ".join(GROUP_COLUMNS) + " FROM error_reports"
# Errors a damaged stored value raises when it becomes a record (an unknown enum value, broken JSON).
BAD_ROW = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError)


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


def _ts(v: Any) -> datetime:
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=UTC)
    return datetime.fromisoformat(v) if v else datetime.now(UTC)


def _json(v: Any, default: Any) -> Any:
    if isinstance(v, str):
        return json.loads(v)
    return default if v is None else v


def group_from_row(row: tuple[Any, ...]) -> GroupRecord:
    """The record of a row of GROUP_COLUMNS; ValueError (and kin) for a damaged row."""
    d = dict(zip(GROUP_COLUMNS, row, strict=True))
    md = _json(d["metadata"], {})
    rd = _json(d["recovery_details"], {})
    if not isinstance(md, dict) or not isinstance(rd, dict):
        raise ValueError("metadata and recovery_details must be objects")
    return GroupRecord(
        error_id=d["error_id"],
        fingerprint=d["fingerprint"] or "",
        error_type=ErrorType(d["error_type"]),
        error_severity=ErrorSeverity(d["error_severity"]),
        category=ErrorCategory(d["category"]),
        message=d["message"] or "",
        component=d["component"] or "unknown",
        operation=d["operation"] or "unknown",
        worker_id=d["worker_id"],
        task_id=d["task_id"],
        hardware_id=d["hardware_id"],
        exception_type=d["exception_type"],
        stack_trace=d["stack_trace"],
        metadata=md,
        first_seen=_ts(d["first_seen"]),
        last_seen=_ts(d["last_seen"]),
        aggregated_count=int(d["aggregated_count"] or 1),
        retry_count=int(d["retry_count"] or 0),
        retry_successful=d["retry_successful"],
        resolution_status=ResolutionStatus(d["resolution_status"] or "open"),
        resolution_time=_ts(d["resolution_time"]) if d["resolution_time"] else None,
        resolution_strategy=d["resolution_strategy"],
        regression_count=int(d["regression_count"] or 0),
        recovery_level=int(d["recovery_level"] or 1),
        recovery_details=rd,
        stored=True,
    )


def reconcile_counts(cur: Cursor) -> int:
    """Count into each group the occurrences its row does not include yet.

    Group rows are written lazily, occurrences always before their acknowledgement; after a
    crash, occurrences newer than a group's ``last_seen`` are the ones its count is missing.
    A resolved group with such occurrences after its resolution is open again (a regression)."""
    rows = cur.execute(
        "SELECT o.error_id, count(*), max(o.occurred_at), any_value(r.resolution_time) FROM error_occurrences o "
        "JOIN error_reports r USING (error_id) WHERE o.occurred_at > r.last_seen GROUP BY o.error_id"
    ).fetchall()
    if not rows:
        return 0
    cur.execute("BEGIN TRANSACTION")
    for error_id, n, newest, resolved_at in rows:
        reopen = resolved_at is not None and newest > resolved_at
        cur.execute(
            "UPDATE error_reports SET aggregated_count = aggregated_count + ?, last_seen = ?"
            + (
                ", resolution_status = 'open', resolution_time = NULL, regression_count = regression_count + 1"
                if reopen
                else ""
            )
            + " WHERE error_id = ?",
            [n, newest, error_id],
        )
    cur.execute("COMMIT")
    return len(rows)


class _Skipper:
    """Counts (and logs, the first few) stored rows that could not become records."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, table: str, key: Any, exc: BaseException) -> None:
        self.count += 1
        if self.count <= 10:
            logger.error("store: skipped a damaged row of %s (%r): %s: %s", table, key, type(exc).__name__, exc)


def load_state(cur: Cursor, regression_window: float, max_groups: int) -> StoredState:
    """Everything the plugin restores at startup; a damaged row is skipped and counted."""
    reconciled = reconcile_counts(cur)
    skip = _Skipper()
    rows = cur.execute(
        _SELECT_GROUP + " WHERE resolution_status <> 'resolved' OR resolution_time > now() - to_seconds(?) "
        "ORDER BY last_seen DESC LIMIT ?",
        [float(regression_window), max_groups],
    ).fetchall()
    groups: list[GroupRecord] = []
    for r in rows:
        try:
            groups.append(group_from_row(r))
        except BAD_ROW as exc:
            skip("error_reports", r[0], exc)
    ids = [g.error_id for g in groups]
    levels: list[LevelRecord] = []
    if ids:
        for error_id, level, updated, history in cur.execute(
            "SELECT error_id, current_level, last_updated, history FROM progressive_recovery "
            "WHERE error_id IN (SELECT unnest(?::VARCHAR[]))",
            [ids],
        ).fetchall():
            try:
                hist = _json(history, [])
                if not isinstance(hist, list):
                    raise ValueError("history must be a list")
                levels.append(LevelRecord(error_id, int(level), _ts(updated), tuple(hist)))
            except BAD_ROW as exc:
                skip("progressive_recovery", error_id, exc)
    scores: list[StrategyScore] = []
    for key, sid, score, updated, samples, metrics in cur.execute(
        "SELECT error_type, strategy_id, score, last_updated, samples, metrics FROM strategy_scores"
    ).fetchall():
        try:
            m = _json(metrics, {})
            if not isinstance(m, dict):
                raise ValueError("metrics must be an object")
            scores.append(StrategyScore(key, sid, float(score or 0.0), int(samples or 0), m, _ts(updated)))
        except BAD_ROW as exc:
            skip("strategy_scores", (key, sid), exc)
    timeouts: list[TimeoutRecord] = []
    for et, sid, timeout, srtt, rttvar, samples, updated in cur.execute(
        "SELECT error_type, strategy_id, timeout, srtt, rttvar, samples, last_updated FROM adaptive_timeouts"
    ).fetchall():
        try:
            timeouts.append(TimeoutRecord(et, sid, float(timeout), float(srtt or 0), float(rttvar or 0),
                                          int(samples or 0), _ts(updated)))
        except BAD_ROW as exc:
            skip("adaptive_timeouts", (et, sid), exc)
    learner: list[LearnerRecord] = []
    for key, state, updated in cur.execute("SELECT key, state, last_updated FROM learner_state").fetchall():
        try:
            learner.append(LearnerRecord(key, _json(state, {}), _ts(updated)))
        except BAD_ROW as exc:
            skip("learner_state", key, exc)
    return StoredState(groups, levels, scores, timeouts, learner, reconciled, skip.count)


def get_group(cur: Cursor, error_id: str) -> GroupRecord | None:
    """The group, or None when it is unknown or its stored row is damaged (logged)."""
    row = cur.execute(_SELECT_GROUP + " WHERE error_id = ?", [error_id]).fetchone()
    if row is None:
        return None
    try:
        return group_from_row(row)
    except BAD_ROW as exc:
        logger.error("store: the stored row of group %s is damaged: %s: %s", error_id, type(exc).__name__, exc)
        return None


def list_groups(cur: Cursor, q: GroupQuery) -> GroupPage:
    """Newest ``last_seen`` first, keyset-paginated on (last_seen, error_id)."""
    where, params = _filters(q.status, q.component, q.min_rank, q.error_type)
    if q.after is not None:
        where.append("(last_seen, error_id) < (?::TIMESTAMPTZ, ?)")
        params.extend(q.after)
    sql = "SELECT " + ", ".join(LIST_FIELDS) + " FROM error_reports"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY last_seen DESC, error_id DESC LIMIT ?"
    params.append(q.limit + 1)
    rows = cur.execute(sql, params).fetchall()
    items = [_row_dict(LIST_FIELDS, r) for r in rows[: q.limit]]
    nxt = (items[-1]["last_seen"], items[-1]["error_id"]) if len(rows) > q.limit and items else None
    return GroupPage(items, nxt)


def unresolved(cur: Cursor, component: str | None, min_rank: int | None) -> list[GroupRecord]:
    where, params = _filters("open", component, min_rank, None)
    rows = cur.execute(_SELECT_GROUP + " WHERE " + " AND ".join(where) + " ORDER BY last_seen DESC", params).fetchall()
    out = []
    for r in rows:
        try:
            out.append(group_from_row(r))
        except BAD_ROW:
            continue
    return out


def level_of(cur: Cursor, error_id: str) -> LevelRecord | None:
    row = cur.execute(
        "SELECT current_level, last_updated, history FROM progressive_recovery WHERE error_id = ?", [error_id]
    ).fetchone()
    if row is None:
        return None
    return LevelRecord(error_id, int(row[0]), _ts(row[1]), tuple(_json(row[2], [])))


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
