"""DuckDB layout of the plugin (schema version 1), the batched statements the writer thread
runs, and the rows they take, made from records."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from coordinator_plugins.error_handling.storage.duckdb.idempotency import UPSERT as IDEMPOTENCY_UPSERT
from coordinator_plugins.error_handling.storage.records import (
    GroupRecord,
    LearnerRecord,
    LevelRecord,
    StrategyRun,
    StrategyScore,
    TimeoutRecord,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS error_reports (
    error_id VARCHAR PRIMARY KEY,
    fingerprint VARCHAR,
    error_type VARCHAR,
    error_severity VARCHAR,
    severity_rank INTEGER,
    category VARCHAR,
    message VARCHAR,
    component VARCHAR,
    operation VARCHAR,
    worker_id VARCHAR,
    task_id VARCHAR,
    hardware_id VARCHAR,
    exception_type VARCHAR,
    stack_trace VARCHAR,
    metadata JSON,
    first_seen TIMESTAMPTZ,
    last_seen TIMESTAMPTZ,
    aggregated_count BIGINT,
    retry_count INTEGER,
    retry_successful BOOLEAN,
    resolution_status VARCHAR,
    resolution_time TIMESTAMPTZ,
    resolution_strategy VARCHAR,
    regression_count INTEGER,
    recovery_level INTEGER,
    recovery_details JSON
);
CREATE TABLE IF NOT EXISTS error_occurrences (
    error_id VARCHAR,
    occurred_at TIMESTAMPTZ,
    message VARCHAR,
    worker_id VARCHAR,
    task_id VARCHAR,
    hardware_id VARCHAR,
    metadata JSON
);
CREATE SEQUENCE IF NOT EXISTS recovery_performance_seq;
CREATE TABLE IF NOT EXISTS recovery_performance (
    id BIGINT PRIMARY KEY DEFAULT nextval('recovery_performance_seq'),
    strategy_id VARCHAR,
    strategy_name VARCHAR,
    error_type VARCHAR,
    execution_time FLOAT,
    success BOOLEAN,
    timestamp TIMESTAMPTZ,
    hardware_id VARCHAR,
    affected_tasks INTEGER,
    recovered_tasks INTEGER,
    resource_usage JSON,
    impact_score FLOAT,
    stability_score FLOAT,
    context JSON,
    error_id VARCHAR,
    level INTEGER,
    outcome VARCHAR
);
CREATE TABLE IF NOT EXISTS strategy_scores (
    error_type VARCHAR,
    strategy_id VARCHAR,
    score FLOAT,
    last_updated TIMESTAMPTZ,
    samples INTEGER,
    metrics JSON,
    PRIMARY KEY (error_type, strategy_id)
);
CREATE TABLE IF NOT EXISTS adaptive_timeouts (
    error_type VARCHAR,
    strategy_id VARCHAR,
    timeout FLOAT,
    last_updated TIMESTAMPTZ,
    srtt FLOAT,
    rttvar FLOAT,
    samples INTEGER,
    PRIMARY KEY (error_type, strategy_id)
);
CREATE TABLE IF NOT EXISTS progressive_recovery (
    error_id VARCHAR PRIMARY KEY,
    current_level INTEGER,
    last_updated TIMESTAMPTZ,
    history JSON
);
CREATE TABLE IF NOT EXISTS learner_state (
    key VARCHAR PRIMARY KEY,
    state JSON,
    last_updated TIMESTAMPTZ
);
"""

GROUP_COLUMNS = (
    "error_id",
    "fingerprint",
    "error_type",
    "error_severity",
    "severity_rank",
    "category",
    "message",
    "component",
    "operation",
    "worker_id",
    "task_id",
    "hardware_id",
    "exception_type",
    "stack_trace",
    "metadata",
    "first_seen",
    "last_seen",
    "aggregated_count",
    "retry_count",
    "retry_successful",
    "resolution_status",
    "resolution_time",
    "resolution_strategy",
    "regression_count",
    "recovery_level",
    "recovery_details",
)
_GROUP_TYPES = (
    "VARCHAR",
    "VARCHAR",
    "VARCHAR",
    "VARCHAR",
    "INTEGER",
    "VARCHAR",
    "VARCHAR",
    "VARCHAR",
    "VARCHAR",
    "VARCHAR",
    "VARCHAR",
    "VARCHAR",
    "VARCHAR",
    "VARCHAR",
    "JSON",
    "TIMESTAMPTZ",
    "TIMESTAMPTZ",
    "BIGINT",
    "INTEGER",
    "BOOLEAN",
    "VARCHAR",
    "TIMESTAMPTZ",
    "VARCHAR",
    "INTEGER",
    "INTEGER",
    "JSON",
)


def _unnest_upsert(
    table: str, columns: tuple[str, ...], types: tuple[str, ...], key: tuple[str, ...], fixed: tuple[str, ...] = ()
) -> str:
    """INSERT ... ON CONFLICT DO UPDATE of every column but the key and the ``fixed`` ones (an
    indexed column that never changes: updating it would make DuckDB delete and insert the row)."""
    sel = ", ".join(f"unnest(?::{t}[]) AS {c}" for c, t in zip(columns, types, strict=True))
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key and c not in fixed)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM (SELECT {sel}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


# A group's count is an increment: the value written in ``aggregated_count`` is the number of
# occurrences since the group's previous write (its whole count when it is new); a stored count
# is never overwritten (see base.Store.record_occurrence).
# New groups (never handed to the store by this writer: their ids are new) are inserted: in a
# transaction an INSERT of 32 group rows took 2.6 ms, an INSERT ... ON CONFLICT DO UPDATE 6.4 ms
# (about 6 ms for any number of rows, at 1,000 or 200,000 stored groups alike), which was the
# writer's main cost under a flood of new errors. Only when another writer of the same database
# inserted one of them first (a duplicate key) is the batch written again with the upsert, which
# adds the counts of both (see WriterLoop._write).
INSERT_GROUPS = (
    f"INSERT INTO error_reports ({', '.join(GROUP_COLUMNS)}) SELECT * FROM (SELECT "
    + ", ".join(f"unnest(?::{t}[]) AS {c}" for c, t in zip(GROUP_COLUMNS, _GROUP_TYPES, strict=True))
    + ")"
)
UPSERT_GROUPS = (
    _unnest_upsert("error_reports", GROUP_COLUMNS, _GROUP_TYPES, ("error_id",), ("fingerprint",))
    .replace(
        "aggregated_count = excluded.aggregated_count",
        "aggregated_count = error_reports.aggregated_count + excluded.aggregated_count",
    )
    .replace("last_seen = excluded.last_seen", "last_seen = greatest(error_reports.last_seen, excluded.last_seen)")
)

# Groups already in the table change only in these columns.
UPDATE_COLUMNS = (
    "error_id", "error_severity", "severity_rank", "last_seen", "aggregated_count", "retry_count",
    "retry_successful", "resolution_status", "resolution_time", "resolution_strategy", "regression_count",
    "recovery_level", "recovery_details",
)
_UPDATE_TYPES = ("VARCHAR", "VARCHAR", "INTEGER", "TIMESTAMPTZ", "BIGINT", "INTEGER", "BOOLEAN", "VARCHAR",
                 "TIMESTAMPTZ", "VARCHAR", "INTEGER", "INTEGER", "JSON")
UPDATE_GROUPS = (
    "UPDATE error_reports SET "
    + ", ".join(
        f"{c} = error_reports.{c} + u.{c}"
        if c == "aggregated_count"
        else f"{c} = greatest(error_reports.{c}, u.{c})"
        if c == "last_seen"
        else f"{c} = u.{c}"
        for c in UPDATE_COLUMNS[1:]
    )
    + " FROM (SELECT "
    + ", ".join(f"unnest(?::{t}[]) AS {c}" for c, t in zip(UPDATE_COLUMNS, _UPDATE_TYPES, strict=True))
    + ") AS u WHERE error_reports.error_id = u.error_id"
)

# Groups that only gained occurrences: their count grows, their last_seen moves to the latest one.
COUNT_GROUPS = (
    "UPDATE error_reports SET aggregated_count = error_reports.aggregated_count + u.delta, "
    "last_seen = greatest(error_reports.last_seen, u.ts) FROM (SELECT unnest(?::VARCHAR[]) AS error_id, "
    "unnest(?::BIGINT[]) AS delta, unnest(?::TIMESTAMPTZ[]) AS ts) AS u WHERE error_reports.error_id = u.error_id"
)

UPSERTS: dict[str, str] = {
    "score": _unnest_upsert(
        "strategy_scores",
        ("error_type", "strategy_id", "score", "last_updated", "samples", "metrics"),
        ("VARCHAR", "VARCHAR", "FLOAT", "TIMESTAMPTZ", "INTEGER", "JSON"),
        ("error_type", "strategy_id"),
    ),
    "timeout": _unnest_upsert(
        "adaptive_timeouts",
        ("error_type", "strategy_id", "timeout", "last_updated", "srtt", "rttvar", "samples"),
        ("VARCHAR", "VARCHAR", "FLOAT", "TIMESTAMPTZ", "FLOAT", "FLOAT", "INTEGER"),
        ("error_type", "strategy_id"),
    ),
    "level": _unnest_upsert(
        "progressive_recovery",
        ("error_id", "current_level", "last_updated", "history"),
        ("VARCHAR", "INTEGER", "TIMESTAMPTZ", "JSON"),
        ("error_id",),
    ),
    "learner": _unnest_upsert(
        "learner_state", ("key", "state", "last_updated"), ("VARCHAR", "JSON", "TIMESTAMPTZ"), ("key",)
    ),
    "idempotency": IDEMPOTENCY_UPSERT,  # written with its report's occurrence (see idempotency.py)
}

INSERT_OCCURRENCES = (
    "INSERT INTO error_occurrences SELECT * FROM (SELECT unnest(?::VARCHAR[]), unnest(?::TIMESTAMPTZ[]), "
    "unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::JSON[]))"
)

PERF_COLUMNS = (
    "strategy_id",
    "strategy_name",
    "error_type",
    "execution_time",
    "success",
    "timestamp",
    "hardware_id",
    "affected_tasks",
    "recovered_tasks",
    "resource_usage",
    "impact_score",
    "stability_score",
    "context",
    "error_id",
    "level",
    "outcome",
)
INSERT_PERF = (
    "INSERT INTO recovery_performance ("
    + ", ".join(PERF_COLUMNS)
    + ") SELECT * FROM (SELECT "
    + ", ".join(
        f"unnest(?::{t}[]) AS {c}"
        for c, t in zip(
            PERF_COLUMNS,
            (
                "VARCHAR",
                "VARCHAR",
                "VARCHAR",
                "FLOAT",
                "BOOLEAN",
                "TIMESTAMPTZ",
                "VARCHAR",
                "INTEGER",
                "INTEGER",
                "JSON",
                "FLOAT",
                "FLOAT",
                "JSON",
                "VARCHAR",
                "INTEGER",
                "VARCHAR",
            ),
            strict=True,
        )
    )
    + ")"
)


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))


def _latest(r: GroupRecord, seen: datetime | None) -> datetime:
    return seen if seen is not None and seen > r.last_seen else r.last_seen


def group_row(r: GroupRecord, delta: int, seen: datetime | None = None) -> tuple[Any, ...]:
    """The row of GROUP_COLUMNS for ``r``, its count the increment ``delta``, its last_seen the
    later of its own and ``seen`` (occurrences counted after the snapshot)."""
    return (
        r.error_id,
        r.fingerprint,
        r.error_type.value,
        r.error_severity.value,
        r.error_severity.rank,
        r.category.value,
        r.message,
        r.component,
        r.operation,
        r.worker_id,
        r.task_id,
        r.hardware_id,
        r.exception_type,
        r.stack_trace,
        dumps(r.metadata),
        r.first_seen,
        _latest(r, seen),
        delta,
        r.retry_count,
        r.retry_successful,
        r.resolution_status.value,
        r.resolution_time,
        r.resolution_strategy,
        r.regression_count,
        r.recovery_level,
        dumps(r.recovery_details),
    )


def update_row(r: GroupRecord, delta: int, seen: datetime | None = None) -> tuple[Any, ...]:
    """The row of UPDATE_COLUMNS for ``r``, as ``group_row``."""
    return (
        r.error_id, r.error_severity.value, r.error_severity.rank, _latest(r, seen), delta, r.retry_count,
        r.retry_successful, r.resolution_status.value, r.resolution_time, r.resolution_strategy, r.regression_count,
        r.recovery_level, dumps(r.recovery_details) if r.recovery_details else "{}",
    )


def perf_row(run: StrategyRun) -> tuple[Any, ...]:
    """The row of PERF_COLUMNS for ``run``."""
    return (
        run.strategy_id, run.strategy_name, run.error_type, run.execution_time, run.success, run.timestamp,
        run.hardware_id, run.affected_tasks, run.recovered_tasks, dumps(run.resource_usage), run.impact_score,
        run.stability_score, dumps(run.context), run.error_id, run.level, run.outcome,
    )


def level_row(r: LevelRecord) -> tuple[Any, ...]:
    # serialized here: DuckDB would infer a STRUCT from the first entry and fail on the others
    return (r.error_id, r.level, r.updated_at, dumps(list(r.history)))


def score_row(r: StrategyScore) -> tuple[Any, ...]:
    return (r.key, r.strategy_id, r.score, r.updated_at, r.samples, dumps(r.metrics))


def timeout_row(r: TimeoutRecord) -> tuple[Any, ...]:
    return (r.error_type, r.strategy_id, r.timeout, r.updated_at, r.srtt, r.rttvar, r.samples)


def learner_row(r: LearnerRecord) -> tuple[Any, ...]:
    return (r.key, dumps(r.state), r.updated_at)


def columns_of(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Transpose rows into per-column lists for an ``unnest(?)`` statement."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(col) for col in zip(*rows, strict=True)]
