"""PostgreSQL schema of the plugin: the tables of SPEC section 6 plus the fleet's (section 10),
as numbered migrations recorded in ``schema_version``.

Migrations run in one transaction under an advisory lock, so members of a fleet starting at the
same moment apply each one once. Only core PostgreSQL is used (no extension)."""

from __future__ import annotations

import logging
from typing import Any

from coordinator_plugins.error_handling.storage.base import SchemaTooNew
from coordinator_plugins.error_handling.storage.postgres.idempotency import TABLE as IDEMPOTENCY_KEYS
from coordinator_plugins.error_handling.storage.postgres.idempotency import UPSERT as IDEMPOTENCY_UPSERT

logger = logging.getLogger(__name__)

# A fixed key for pg_advisory_xact_lock: the migrations of this plugin, whoever runs them.
MIGRATION_LOCK = 0x65685F6D6967  # "eh_mig"
BUDGET_LOCK = 0x65685F627564  # "eh_bud": budget grants are decided one at a time fleet-wide

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "the tables of SPEC section 6",
        """
CREATE TABLE IF NOT EXISTS error_reports (
    error_id TEXT PRIMARY KEY,
    fingerprint TEXT,
    error_type TEXT,
    error_severity TEXT,
    severity_rank INTEGER,
    category TEXT,
    message TEXT,
    component TEXT,
    operation TEXT,
    worker_id TEXT,
    task_id TEXT,
    hardware_id TEXT,
    exception_type TEXT,
    stack_trace TEXT,
    metadata JSONB,
    first_seen TIMESTAMPTZ,
    last_seen TIMESTAMPTZ,
    aggregated_count BIGINT NOT NULL DEFAULT 0,
    retry_count INTEGER,
    retry_successful BOOLEAN,
    resolution_status TEXT,
    resolution_time TIMESTAMPTZ,
    resolution_strategy TEXT,
    regression_count INTEGER,
    recovery_level INTEGER,
    recovery_details JSONB
);
CREATE INDEX IF NOT EXISTS error_reports_last_seen ON error_reports (last_seen DESC, error_id DESC);
CREATE TABLE IF NOT EXISTS error_occurrences (
    error_id TEXT,
    occurred_at TIMESTAMPTZ,
    message TEXT,
    worker_id TEXT,
    task_id TEXT,
    hardware_id TEXT,
    metadata JSONB
);
CREATE INDEX IF NOT EXISTS error_occurrences_group ON error_occurrences (error_id, occurred_at);
CREATE INDEX IF NOT EXISTS error_occurrences_time ON error_occurrences (occurred_at);
CREATE TABLE IF NOT EXISTS recovery_performance (
    id BIGSERIAL PRIMARY KEY,
    strategy_id TEXT,
    strategy_name TEXT,
    error_type TEXT,
    execution_time DOUBLE PRECISION,
    success BOOLEAN,
    timestamp TIMESTAMPTZ,
    hardware_id TEXT,
    affected_tasks INTEGER,
    recovered_tasks INTEGER,
    resource_usage JSONB,
    impact_score DOUBLE PRECISION,
    stability_score DOUBLE PRECISION,
    context JSONB,
    error_id TEXT,
    level INTEGER,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS recovery_performance_time ON recovery_performance (timestamp);
CREATE TABLE IF NOT EXISTS strategy_scores (
    error_type TEXT,
    strategy_id TEXT,
    score DOUBLE PRECISION,
    last_updated TIMESTAMPTZ,
    samples INTEGER,
    metrics JSONB,
    PRIMARY KEY (error_type, strategy_id)
);
CREATE TABLE IF NOT EXISTS adaptive_timeouts (
    error_type TEXT,
    strategy_id TEXT,
    timeout DOUBLE PRECISION,
    last_updated TIMESTAMPTZ,
    srtt DOUBLE PRECISION,
    rttvar DOUBLE PRECISION,
    samples INTEGER,
    PRIMARY KEY (error_type, strategy_id)
);
CREATE TABLE IF NOT EXISTS progressive_recovery (
    error_id TEXT PRIMARY KEY,
    current_level INTEGER,
    last_updated TIMESTAMPTZ,
    history JSONB
);
CREATE TABLE IF NOT EXISTS learner_state (
    key TEXT PRIMARY KEY,
    state JSONB,
    last_updated TIMESTAMPTZ
);
""",
    ),
    (
        2,
        "fleet: members, leases, the current group of each fingerprint, events, budget actions",
        """
ALTER TABLE recovery_performance ADD COLUMN IF NOT EXISTS coordinator_id TEXT;
ALTER TABLE error_occurrences ADD COLUMN IF NOT EXISTS coordinator_id TEXT;
CREATE TABLE IF NOT EXISTS fleet_members (
    coordinator_id TEXT PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
    info JSONB
);
CREATE TABLE IF NOT EXISTS recovery_leases (
    error_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    renewals INTEGER NOT NULL DEFAULT 0,
    previous_owner TEXT
);
CREATE TABLE IF NOT EXISTS group_fingerprints (
    fingerprint TEXT PRIMARY KEY,
    error_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS fleet_events (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    coordinator_id TEXT,
    kind TEXT NOT NULL,
    error_id TEXT,
    payload JSONB
);
CREATE TABLE IF NOT EXISTS budget_actions (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    component TEXT NOT NULL,
    coordinator_id TEXT
);
CREATE INDEX IF NOT EXISTS budget_actions_time ON budget_actions (at);
""",
    ),
    (
        3,
        "commit tokens: a retry after an unanswered COMMIT never applies a batch twice",
        """
CREATE TABLE IF NOT EXISTS store_commits (
    token TEXT PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL DEFAULT now()
);
""",
    ),
    (
        4,
        "indexes that GET /errors' filters page along: by component, open groups, resolved groups",
        """
CREATE INDEX IF NOT EXISTS error_reports_component ON error_reports (component, last_seen DESC, error_id DESC);
CREATE INDEX IF NOT EXISTS error_reports_open ON error_reports (last_seen DESC, error_id DESC)
    WHERE resolution_status <> 'resolved';
CREATE INDEX IF NOT EXISTS error_reports_resolved ON error_reports (last_seen DESC, error_id DESC)
    WHERE resolution_status = 'resolved';
""",
    ),
    (
        5,
        "the other ids of a group (seed errors folded into it on migration keep answering)",
        """
CREATE TABLE IF NOT EXISTS error_aliases (
    alias_id TEXT PRIMARY KEY,
    error_id TEXT NOT NULL,
    relation TEXT,
    details JSONB
);
""",
    ),
    (6, "the idempotency keys of reports (a retried report is counted once, fleet-wide)", IDEMPOTENCY_KEYS),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

CREATE_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL "
    "DEFAULT now(), description TEXT)"
)

GROUP_COLUMNS = (
    "error_id", "fingerprint", "error_type", "error_severity", "severity_rank", "category", "message", "component",
    "operation", "worker_id", "task_id", "hardware_id", "exception_type", "stack_trace", "metadata", "first_seen",
    "last_seen", "aggregated_count", "retry_count", "retry_successful", "resolution_status", "resolution_time",
    "resolution_strategy", "regression_count", "recovery_level", "recovery_details",
)
GROUP_TYPES = (
    "text", "text", "text", "text", "int", "text", "text", "text", "text", "text", "text", "text", "text", "text",
    "jsonb", "timestamptz", "timestamptz", "bigint", "int", "bool", "text", "timestamptz", "text", "int", "int",
    "jsonb",
)

# A stale snapshot never undoes a resolution made elsewhere in the fleet: a group stays resolved
# unless the snapshot saw an occurrence after the resolution (a regression).
_KEEP_RESOLVED = (
    "(error_reports.resolution_status = 'resolved' AND excluded.resolution_status <> 'resolved' "
    "AND excluded.last_seen <= error_reports.resolution_time)"
)


def _resolved_guard(column: str) -> str:
    return f"{column} = CASE WHEN {_KEEP_RESOLVED} THEN error_reports.{column} ELSE excluded.{column} END"


_STATE = ("error_severity", "severity_rank", "retry_count", "retry_successful", "regression_count",
          "recovery_level", "recovery_details")
# Upsert groups: ``aggregated_count`` of each row is the number of occurrences this commit adds
# (0 for a state change), added to the stored count: an increment, never last-writer-wins.
UPSERT_GROUPS = (
    f"INSERT INTO error_reports ({', '.join(GROUP_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(GROUP_TYPES))
    + ") ON CONFLICT (error_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _STATE if c not in ("error_severity", "severity_rank"))
    + ", error_severity = CASE WHEN excluded.severity_rank > error_reports.severity_rank THEN excluded.error_severity"
    " ELSE error_reports.error_severity END"
    ", severity_rank = GREATEST(error_reports.severity_rank, excluded.severity_rank)"
    ", last_seen = GREATEST(error_reports.last_seen, excluded.last_seen)"
    ", aggregated_count = error_reports.aggregated_count + excluded.aggregated_count, "
    + ", ".join(_resolved_guard(c) for c in ("resolution_status", "resolution_time", "resolution_strategy"))
)

OCC_COLUMNS = ("error_id", "occurred_at", "message", "worker_id", "task_id", "hardware_id", "metadata",
               "coordinator_id")
INSERT_OCCURRENCES = (
    f"INSERT INTO error_occurrences ({', '.join(OCC_COLUMNS)}) SELECT * FROM unnest($1::text[], "
    "$2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::text[])"
)

RUN_COLUMNS = (
    "strategy_id", "strategy_name", "error_type", "execution_time", "success", "timestamp", "hardware_id",
    "affected_tasks", "recovered_tasks", "resource_usage", "impact_score", "stability_score", "context", "error_id",
    "level", "outcome", "coordinator_id",
)
RUN_TYPES = ("text", "text", "text", "float8", "bool", "timestamptz", "text", "int", "int", "jsonb", "float8",
             "float8", "jsonb", "text", "int", "text", "text")
INSERT_RUNS = (
    f"INSERT INTO recovery_performance ({', '.join(RUN_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(RUN_TYPES))
    + ")"
)


def _upsert(table: str, columns: tuple[str, ...], types: tuple[str, ...], key: tuple[str, ...]) -> str:
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest("
        + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
        + f") ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    )


UPSERTS = {
    "level": _upsert("progressive_recovery", ("error_id", "current_level", "last_updated", "history"),
                     ("text", "int", "timestamptz", "jsonb"), ("error_id",)),
    "score": _upsert("strategy_scores", ("error_type", "strategy_id", "score", "last_updated", "samples", "metrics"),
                     ("text", "text", "float8", "timestamptz", "int", "jsonb"), ("error_type", "strategy_id")),
    "timeout": _upsert("adaptive_timeouts",
                       ("error_type", "strategy_id", "timeout", "last_updated", "srtt", "rttvar", "samples"),
                       ("text", "text", "float8", "timestamptz", "float8", "float8", "int"),
                       ("error_type", "strategy_id")),
    "learner": _upsert("learner_state", ("key", "state", "last_updated"), ("text", "jsonb", "timestamptz"), ("key",)),
    "idempotency": IDEMPOTENCY_UPSERT,  # written with its report's occurrence (see idempotency.py)
}


async def migrate(con: Any, path: str) -> int:
    """Bring the database to SCHEMA_VERSION in one transaction, under the migrations' advisory
    lock (members starting at once apply each step once); the version it has now. SchemaTooNew
    for a database newer than the code."""
    async with con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await con.execute(CREATE_VERSION_TABLE)
        current = await con.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
        if current > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"error_handling.database: {path} has schema version {current}, newer than this "
                f"plugin's {SCHEMA_VERSION}: upgrade coordinator_plugins"
            )
        for version, description, sql in MIGRATIONS:
            if version > current:
                await con.execute(sql)
                await con.execute(
                    "INSERT INTO schema_version (version, description) VALUES ($1, $2)", version, description
                )
                logger.info("store: %s migrated to schema version %d (%s)", path, version, description)
    return max(current, SCHEMA_VERSION)
