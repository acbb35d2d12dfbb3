"""The reads of the PostgreSQL store (the Store protocol's read methods), on its pool."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from coordinator_plugins.error_handling.model import ErrorCategory, ErrorSeverity, ErrorType, ResolutionStatus, iso
from coordinator_plugins.error_handling.storage.postgres.pool import Pool
from coordinator_plugins.error_handling.storage.postgres.rows import from_json
from coordinator_plugins.error_handling.storage.postgres.schema import GROUP_COLUMNS
from coordinator_plugins.error_handling.storage.records import (
    LIST_FIELDS,
    AliasRecord,
    GroupPage,
    GroupQuery,
    GroupRecord,
    LearnerRecord,
    LevelRecord,
    OccurrenceRecord,
    StoredState,
    StoreTotals,
    StrategyRun,
    StrategyScore,
    TimeoutRecord,
)
from coordinator_plugins.error_handling.storage.sqlshared import (
    group_filters,
    history_item,
    performance_answer,
    series_answer,
    series_span,
)

SELECT_GROUP = "SELECT " + ", ".join(GROUP_COLUMNS) + " FROM error_reports"
SELECT_ITEMS = "SELECT " + ", ".join(LIST_FIELDS) + " FROM error_reports"
_COUNTS = (("aggregated_count", 0), ("retry_count", 0), ("regression_count", 0), ("recovery_level", 1))


def group_of(row: Any) -> GroupRecord:
    """A stored row as a record; ValueError / KeyError for a row that cannot be read."""
    return GroupRecord.from_stored(
        row,
        metadata=from_json(row["metadata"], {}) or {},
        recovery_details=from_json(row["recovery_details"], {}) or {},
        first_seen=row["first_seen"],
        last_seen=row["last_seen"],
        resolution_time=row["resolution_time"],
        empty_count=0,
    )


def item_of(row: Any) -> dict[str, Any]:
    """A stored row's GET /errors item, as ``group_of(row).to_api(LIST_FIELDS)`` has it, without
    building the whole record (its JSON columns are not even read); ValueError / KeyError for a
    row that cannot be read."""
    item = dict(row.items())
    item["error_type"] = ErrorType(row["error_type"]).value
    item["error_severity"] = ErrorSeverity(row["error_severity"]).value
    item["category"] = ErrorCategory(row["category"]).value
    item["resolution_status"] = ResolutionStatus(row["resolution_status"] or "open").value
    item["message"] = row["message"] or ""
    item["component"] = row["component"] or "unknown"
    item["operation"] = row["operation"] or "unknown"
    for name, empty in _COUNTS:
        item[name] = int(row[name] or empty)
    for name in ("first_seen", "last_seen", "resolution_time"):
        item[name] = iso(row[name])
    return item


def run_of(r: Any) -> StrategyRun:
    return StrategyRun(
        strategy_id=r["strategy_id"], strategy_name=r["strategy_name"] or r["strategy_id"],
        error_type=r["error_type"], execution_time=float(r["execution_time"] or 0.0), success=bool(r["success"]),
        affected_tasks=r["affected_tasks"] or 0, recovered_tasks=r["recovered_tasks"] or 0,
        impact_score=float(r["impact_score"] or 0.0), stability_score=float(r["stability_score"] or 0.0),
        outcome=r["outcome"] or ("success" if r["success"] else "failure"), error_id=r["error_id"],
        level=r["level"] or 1, hardware_id=r["hardware_id"], resource_usage=from_json(r["resource_usage"], {}) or {},
        context=from_json(r["context"], {}) or {}, timestamp=r["timestamp"],
    )


def _dollar(n: int) -> str:
    return f"${n}"  # PostgreSQL's placeholder of the n-th parameter


class PostgresReads:
    """The read half of the store; ``skipped_rows`` counts stored rows that could not be read."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.skipped_rows = 0

    def _pool(self) -> asyncpg.Pool:
        return self.pool.get()  # StoreClosed when the store is not open

    def _groups(self, rows: list[Any]) -> list[GroupRecord]:
        out = []
        for row in rows:
            try:
                out.append(group_of(row))
            except (ValueError, KeyError, TypeError):
                self.skipped_rows += 1
        return out

    async def load_state(self, regression_window: float, max_groups: int) -> StoredState:
        async with self._pool().acquire() as con:
            # Counts are increments committed with their occurrences: nothing to reconcile.
            rows = await con.fetch(
                SELECT_GROUP + " WHERE resolution_status <> 'resolved' OR resolution_time > now() - "
                "make_interval(secs => $1) ORDER BY last_seen DESC LIMIT $2",
                float(regression_window), max_groups,
            )
            groups = self._groups(rows)
            levels = [
                LevelRecord(r["error_id"], r["current_level"], r["last_updated"],
                            tuple(from_json(r["history"], []) or []))
                for r in await con.fetch(
                    "SELECT error_id, current_level, last_updated, history FROM progressive_recovery "
                    "WHERE error_id = ANY($1::text[])", [g.error_id for g in groups],
                )
            ]
            scores = await self._scores(con)
            timeouts = await self._timeouts(con)
            learner = [
                LearnerRecord(r["key"], from_json(r["state"], {}) or {}, r["last_updated"])
                for r in await con.fetch("SELECT key, state, last_updated FROM learner_state")
            ]
        return StoredState(groups, levels, scores, timeouts, learner, 0, self.skipped_rows)

    async def _scores(self, con: asyncpg.Connection) -> list[StrategyScore]:
        return [
            StrategyScore(r["error_type"], r["strategy_id"], float(r["score"] or 0.0), r["samples"] or 0,
                          from_json(r["metrics"], {}) or {}, r["last_updated"])
            for r in await con.fetch(
                "SELECT error_type, strategy_id, score, samples, metrics, last_updated FROM strategy_scores"
            )
        ]

    async def _timeouts(self, con: asyncpg.Connection) -> list[TimeoutRecord]:
        return [
            TimeoutRecord(r["error_type"], r["strategy_id"], float(r["timeout"]), float(r["srtt"] or 0.0),
                          float(r["rttvar"] or 0.0), r["samples"] or 0, r["last_updated"])
            for r in await con.fetch(
                "SELECT error_type, strategy_id, timeout, srtt, rttvar, samples, last_updated FROM adaptive_timeouts"
            )
        ]

    async def get_group(self, error_id: str) -> GroupRecord | None:
        row = await self._pool().fetchrow(SELECT_GROUP + " WHERE error_id = $1", error_id)
        groups = self._groups([row]) if row is not None else []
        return groups[0] if groups else None

    async def list_groups(self, query: GroupQuery) -> GroupPage:
        params: list[Any] = []
        where = group_filters(query.status, query.component, query.min_rank, query.error_type, params, _dollar)
        if query.after is not None:
            params.extend((datetime.fromisoformat(query.after[0]), query.after[1]))
            where.append(f"(last_seen, error_id) < (${len(params) - 1}, ${len(params)})")
        sql = SELECT_ITEMS + (" WHERE " + " AND ".join(where) if where else "")
        params.append(query.limit + 1)
        sql += f" ORDER BY last_seen DESC, error_id DESC LIMIT ${len(params)}"
        rows = await self._pool().fetch(sql, *params)
        items = []
        for row in rows[: query.limit]:
            try:
                items.append(item_of(row))
            except (ValueError, KeyError, TypeError):
                self.skipped_rows += 1
        nxt = (items[-1]["last_seen"], items[-1]["error_id"]) if len(rows) > query.limit and items else None
        return GroupPage(items, nxt)

    async def unresolved_groups(self, component: str | None = None, min_rank: int | None = None) -> list[GroupRecord]:
        params: list[Any] = []
        where = group_filters("open", component, min_rank, None, params, _dollar)
        rows = await self._pool().fetch(SELECT_GROUP + " WHERE " + " AND ".join(where) + " ORDER BY last_seen DESC",
                                        *params)
        return self._groups(rows)

    async def occurrences(self, error_id: str, limit: int = 100) -> list[OccurrenceRecord]:
        rows = await self._pool().fetch(
            "SELECT error_id, occurred_at, message, worker_id, task_id, hardware_id, metadata FROM error_occurrences "
            "WHERE error_id = $1 ORDER BY occurred_at DESC LIMIT $2", error_id, limit,
        )
        return [
            OccurrenceRecord(r["error_id"], r["occurred_at"], r["message"] or "", r["worker_id"], r["task_id"],
                             r["hardware_id"], from_json(r["metadata"]))
            for r in rows
        ]

    async def occurrence_series(
        self, error_id: str, buckets: int = 60, window: float | None = None
    ) -> dict[str, Any] | None:
        pool = self._pool()
        row = await pool.fetchrow(
            "SELECT extract(epoch FROM first_seen)::float8 AS f, extract(epoch FROM now())::float8 AS n "
            "FROM error_reports WHERE error_id = $1", error_id,
        )
        if row is None:
            return None
        first, now = float(row["f"]), float(row["n"])
        start, step, n = series_span(first, now, buckets, window)
        counts = [0] * n
        for r in await pool.fetch(
            "SELECT floor((extract(epoch FROM occurred_at) - $1) / $2)::bigint AS b, count(*) AS c "
            "FROM error_occurrences WHERE error_id = $3 AND occurred_at >= to_timestamp($1) GROUP BY 1",
            float(start), float(step), error_id,
        ):
            if 0 <= r["b"] < n:
                counts[r["b"]] += int(r["c"])
        return series_answer(error_id, start, now, step, counts)

    async def alias(self, alias_id: str) -> AliasRecord | None:
        r = await self._pool().fetchrow(
            "SELECT error_id, relation, details FROM error_aliases WHERE alias_id = $1", alias_id
        )
        if r is None:
            return None
        details = from_json(r["details"], {})
        relation = r["relation"] or "merged"
        return AliasRecord(alias_id, r["error_id"], relation, details if isinstance(details, dict) else {})

    async def recovery_level(self, error_id: str) -> LevelRecord | None:
        r = await self._pool().fetchrow(
            "SELECT error_id, current_level, last_updated, history FROM progressive_recovery WHERE error_id = $1",
            error_id,
        )
        if r is None:
            return None
        return LevelRecord(r["error_id"], int(r["current_level"]), r["last_updated"],
                           tuple(from_json(r["history"], []) or []))

    async def recovery_summary(self, limit: int = 100) -> dict[str, Any]:
        pool = self._pool()
        rows = await pool.fetch(
            "SELECT error_id, current_level, last_updated, jsonb_array_length(coalesce(history, '[]'::jsonb)) AS n, "
            "history -> -1 AS last FROM progressive_recovery ORDER BY last_updated DESC LIMIT $1", limit,
        )
        by_level = {r[0]: r[1] for r in await pool.fetch(
            "SELECT current_level, count(*) FROM progressive_recovery GROUP BY 1")}
        return {
            "errors": [
                history_item(r["error_id"], r["current_level"], iso(r["last_updated"]), r["n"],
                             from_json(r["last"], None))
                for r in rows
            ],
            "summary": {"groups": sum(by_level.values()), "by_level": {str(k): v for k, v in sorted(by_level.items())}},
        }

    async def strategy_performance(
        self, error_type: str | None = None, strategy_id: str | None = None, days: int = 30
    ) -> dict[str, Any]:
        params: list[Any] = [float(days) * 86400.0]
        where = ["timestamp > now() - make_interval(secs => $1)"]
        for column, value in (("error_type", error_type), ("strategy_id", strategy_id)):
            if value is not None:
                params.append(value)
                where.append(f"{column} = ${len(params)}")
        w = " FROM recovery_performance WHERE " + " AND ".join(where)
        pool = self._pool()
        rows = await pool.fetch(
            "SELECT strategy_id, min(strategy_name), count(*), sum(success::int), avg(execution_time), "
            "avg(impact_score), avg(stability_score), sum(affected_tasks), sum(recovered_tasks), "
            "count(*) FILTER (WHERE outcome = 'timeout')" + w + " GROUP BY strategy_id", *params,
        )
        per_type = await pool.fetch(
            "SELECT error_type, strategy_id, count(*), avg(success::int)::float8, avg(execution_time)" + w
            + " GROUP BY 1, 2", *params,
        )
        outcomes = {r[0]: r[1] for r in await pool.fetch("SELECT outcome, count(*)" + w + " GROUP BY 1", *params)}
        return performance_answer(rows, per_type, outcomes, days)

    async def strategy_runs(self, error_id: str | None = None, limit: int = 1000) -> list[StrategyRun]:
        sql = "SELECT * FROM recovery_performance"
        params: list[Any] = []
        if error_id is not None:
            params.append(error_id)
            sql += " WHERE error_id = $1"
        params.append(limit)
        rows = await self._pool().fetch(sql + f" ORDER BY timestamp DESC, id DESC LIMIT ${len(params)}", *params)
        return [run_of(r) for r in rows]

    async def strategy_scores(self) -> list[StrategyScore]:
        async with self._pool().acquire() as con:
            return await self._scores(con)

    async def timeouts(self) -> list[TimeoutRecord]:
        async with self._pool().acquire() as con:
            return await self._timeouts(con)

    async def totals(self) -> StoreTotals:
        r = await self._pool().fetchrow(
            "SELECT (SELECT count(*) FROM error_reports) AS g, (SELECT count(*) FROM error_occurrences) AS o, "
            "(SELECT coalesce(sum(aggregated_count), 0) FROM error_reports) AS a, "
            "(SELECT count(*) FROM recovery_performance) AS r, (SELECT count(*) FROM progressive_recovery) AS l"
        )
        return StoreTotals(int(r["g"]), int(r["o"]), int(r["a"]), int(r["r"]), int(r["l"]))
