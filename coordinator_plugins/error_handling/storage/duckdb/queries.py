"""Read queries against the DuckDB store (run on its reader thread, never on the loop): groups
and the state restored at startup. Rows become records here; no caller sees a row."""

from __future__ import annotations

import gc
import json
import logging
from datetime import UTC, datetime
from typing import Any

from coordinator_plugins.error_handling.model import iso
from coordinator_plugins.error_handling.storage.duckdb.order import GroupOrder, from_micros, parse_cursor_time
from coordinator_plugins.error_handling.storage.duckdb.schema import GROUP_COLUMNS
from coordinator_plugins.error_handling.storage.records import (
    LIST_FIELDS,
    AliasRecord,
    GroupPage,
    GroupQuery,
    GroupRecord,
    LearnerRecord,
    LevelRecord,
    StoredFingerprints,
    StoredState,
    StrategyScore,
    TimeoutRecord,
)
from coordinator_plugins.error_handling.storage.sqlshared import group_filters

logger = logging.getLogger(__name__)
Cursor = Any  # a DuckDB cursor
_SELECT_GROUP = "SELECT " + ", ".join(GROUP_COLUMNS) + " FROM error_reports"
_TIMES = ("first_seen", "last_seen", "resolution_time")
# The same columns with the timestamps as epoch microseconds, for reading many groups at once.
_SELECT_GROUPS_FAST = "SELECT " + ", ".join(f"epoch_us({c})" if c in _TIMES else c for c in GROUP_COLUMNS) + (
    " FROM error_reports")
# Groups restored into memory at startup (the most recent); the others come from the store when
# they recur (exact either way), so startup does not grow with max_groups_in_memory.
STARTUP_GROUPS = 10_000
FINGERPRINT_PART = 8192  # rows of stored fingerprints fetched at a time at startup
_RECENT = "(resolution_status <> 'resolved' OR resolution_time > now() - to_seconds(?))"
# Errors a damaged stored value raises when it becomes a record (an unknown enum value, broken JSON).
BAD_ROW = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError)


def _ts(v: Any) -> datetime:
    if isinstance(v, int):  # epoch_us(...): ten times cheaper to fetch than a TIMESTAMPTZ
        return from_micros(v)
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
    return GroupRecord.from_stored(
        d,
        metadata=md,
        recovery_details=rd,
        first_seen=_ts(d["first_seen"]),
        last_seen=_ts(d["last_seen"]),
        resolution_time=_ts(d["resolution_time"]) if d["resolution_time"] else None,
        empty_count=1,
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
    window = float(regression_window)
    max_groups = min(max_groups, STARTUP_GROUPS)
    # The newest ids first, then their rows: a top-N of whole rows (messages, stack traces,
    # metadata) ran out of DuckDB's memory_limit at 200,000 groups; of ids it does not.
    recent = [r[0] for r in cur.execute(
        "SELECT error_id FROM error_reports WHERE " + _RECENT + " ORDER BY last_seen DESC LIMIT ?", [window, max_groups]
    ).fetchall()]
    rows = cur.execute(
        _SELECT_GROUPS_FAST + " WHERE error_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY last_seen DESC", [recent]
    ).fetchall() if recent else []
    groups: list[GroupRecord] = []
    collecting = gc.isenabled()
    gc.disable()  # thousands of new objects at once: the collector would walk them again and again
    try:
        for r in rows:
            try:
                groups.append(group_from_row(r))
            except BAD_ROW as exc:
                skip("error_reports", r[0], exc)
    finally:
        if collecting:
            gc.enable()
    # The fingerprints of the recent groups left in the store (looked up when they recur): into a
    # Bloom filter sized for them, part by part, never a list of them all.
    stored = StoredFingerprints()
    if len(rows) >= max_groups:
        left = cur.execute("SELECT count(*) FROM error_reports WHERE " + _RECENT, [window]).fetchone()
        stored = StoredFingerprints(max(0, int(left[0] if left else 0) - max_groups))
        result = cur.execute(
            "SELECT fingerprint FROM error_reports WHERE " + _RECENT + " AND error_id NOT IN "
            "(SELECT error_id FROM error_reports WHERE " + _RECENT + " ORDER BY last_seen DESC LIMIT ?)",
            [window, window, max_groups],
        )
        while part := result.fetchmany(FINGERPRINT_PART):
            stored.update(fp for (fp,) in part)
    open_total, critical_open = cur.execute(
        "SELECT count(*) FILTER (WHERE resolution_status <> 'resolved'), "
        "count(*) FILTER (WHERE resolution_status <> 'resolved' AND error_severity = 'critical') FROM error_reports"
    ).fetchone() or (0, 0)
    stopped = [(e, str(r)) for e, r in cur.execute(  # stopped recoveries stay stopped, in memory or not
        "SELECT error_id, json_extract_string(recovery_details, '$.stopped') FROM error_reports "
        "WHERE resolution_status <> 'resolved' AND json_extract_string(recovery_details, '$.stopped') IS NOT NULL"
    ).fetchall()]
    ids = [g.error_id for g in groups] + [e for e, _ in stopped]
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
    return StoredState(groups, levels, scores, timeouts, learner, reconciled, skip.count, stored,
                       int(open_total), int(critical_open), stopped)


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


_ORDER_ROWS = (
    "SELECT error_id, epoch_us(last_seen), resolution_status <> 'resolved', component, severity_rank, error_type, "
    "rowid FROM error_reports ORDER BY last_seen, error_id"
)
_PAGE_ROWS = "SELECT rowid, " + ", ".join(f"epoch_us({c})" if c in _TIMES else c for c in LIST_FIELDS) + (
    " FROM error_reports WHERE ")
_BY_ROWID = _PAGE_ROWS + "rowid = ANY(?::BIGINT[])"
_BY_ID = _PAGE_ROWS + "error_id IN (SELECT unnest(?::VARCHAR[]))"
_PAGE_TIMES = tuple(i for i, c in enumerate(LIST_FIELDS) if c in _TIMES)


def _page_item(row: tuple[Any, ...]) -> dict[str, Any]:
    """A list item from a page row (its timestamps as epoch microseconds: cheaper to read)."""
    values = list(row)
    for i in _PAGE_TIMES:
        if values[i] is not None:
            values[i] = iso(from_micros(values[i]))
    return dict(zip(LIST_FIELDS, values, strict=True))


def list_groups(cur: Cursor, q: GroupQuery, order: GroupOrder) -> GroupPage:
    """Newest ``last_seen`` first, keyset-paginated on (last_seen, error_id), through the store's
    sorted view (:mod:`.order`): the page's keys come from memory, its rows by rowid, so any page
    costs what the first does however many groups there are."""
    order.build(lambda: cur.execute(_ORDER_ROWS).fetchall())
    key = (parse_cursor_time(q.after[0]), q.after[1]) if q.after is not None else None
    picked = order.page(q.status, q.component, q.min_rank, q.error_type, q.limit + 1, key)
    page = picked[: q.limit]
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
    if len(picked) > q.limit and page:
        error_id, _, ls = page[-1]
        nxt = (iso(from_micros(ls)) or "", error_id)
    return GroupPage(items, nxt)


def find_groups(cur: Cursor, fingerprints: list[str]) -> dict[str, tuple[GroupRecord, LevelRecord | None]]:
    """fingerprint -> (its group, open first else the one seen last; its level) for those of
    ``fingerprints`` the store holds. One fingerprint goes by the index (no ORDER BY: with one,
    DuckDB reads the full row through a join over the whole table); several in one statement."""
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
    groups: dict[str, GroupRecord] = {}
    for fp, row in best.items():
        try:
            groups[fp] = group_from_row(row)
        except BAD_ROW as exc:
            logger.error("store: the stored row of group %s is damaged: %s: %s", row[0], type(exc).__name__, exc)
    levels = levels_of(cur, [g.error_id for g in groups.values()]) if groups else {}  # one query for all
    return {fp: (g, levels.get(g.error_id)) for fp, g in groups.items()}


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


def alias_of(cur: Cursor, alias_id: str) -> AliasRecord | None:
    """The group another id names (see AliasRecord), or None."""
    row = cur.execute("SELECT error_id, relation, details FROM error_aliases WHERE alias_id = ?", [alias_id]).fetchone()
    if row is None:
        return None
    details = _json(row[2], {})
    return AliasRecord(alias_id, str(row[0]), row[1] or "merged", details if isinstance(details, dict) else {})


def level_of(cur: Cursor, error_id: str) -> LevelRecord | None:
    row = cur.execute(
        "SELECT current_level, last_updated, history FROM progressive_recovery WHERE error_id = ?", [error_id]
    ).fetchone()
    if row is None:
        return None
    return LevelRecord(error_id, int(row[0]), _ts(row[1]), tuple(_json(row[2], [])))


def levels_of(cur: Cursor, error_ids: list[str]) -> dict[str, LevelRecord]:
    """error_id -> its level, for those of ``error_ids`` that have one (a damaged one is skipped,
    not fatal to the others): one statement."""
    out: dict[str, LevelRecord] = {}
    sql = "SELECT error_id, current_level, last_updated, history FROM progressive_recovery WHERE error_id "
    one = len(error_ids) == 1  # by the key's index
    for error_id, level, updated, history in cur.execute(
        sql + ("= ?" if one else "IN (SELECT unnest(?::VARCHAR[]))"), error_ids if one else [error_ids]
    ).fetchall():
        try:
            out[error_id] = LevelRecord(error_id, int(level), _ts(updated), tuple(_json(history, [])))
        except BAD_ROW as exc:
            logger.error("store: the stored level of group %s is damaged: %s: %s", error_id, type(exc).__name__, exc)
    return out


def _filters(
    status: str, component: str | None, min_rank: int | None, error_type: str | None
) -> tuple[list[str], list[Any]]:
    """WHERE clauses and their parameters (never values pasted into SQL)."""
    params: list[Any] = []
    return group_filters(status, component, min_rank, error_type, params, _question), params


def _question(n: int) -> str:
    return "?"
