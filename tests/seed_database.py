"""A DuckDB file as the seed framework's code wrote it: its tables exactly (the seed's CREATE
TABLE statements), naive local timestamps (``datetime.now()``), JSON written by ``json.dumps``,
ids ``err_<hex>``, tracebacks from ``traceback.format_exception``, and the coordinator's own
tables beside them."""

from __future__ import annotations

import json
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import duckdb

SEED_DDL = {
    "error_reports": """CREATE TABLE IF NOT EXISTS error_reports (
        error_id VARCHAR PRIMARY KEY, error_type VARCHAR, error_severity VARCHAR, message TEXT,
        component VARCHAR, operation VARCHAR, timestamp TIMESTAMP, retry_count INTEGER,
        retry_successful BOOLEAN, aggregated_count INTEGER, resolution_status VARCHAR,
        resolution_time TIMESTAMP, resolution_strategy VARCHAR, context_data JSON, recovery_details JSON)""",
    "error_relations": """CREATE TABLE IF NOT EXISTS error_relations (
        error_id VARCHAR, related_error_id VARCHAR, relation_type VARCHAR, UNIQUE(error_id, related_error_id))""",
    "recovery_performance": """CREATE TABLE IF NOT EXISTS recovery_performance (
        id INTEGER PRIMARY KEY, strategy_id VARCHAR, strategy_name VARCHAR, error_type VARCHAR,
        execution_time FLOAT, success BOOLEAN, timestamp TIMESTAMP, hardware_id VARCHAR,
        affected_tasks INTEGER, recovered_tasks INTEGER, resource_usage JSON, impact_score FLOAT,
        stability_score FLOAT, context JSON)""",
    "strategy_scores": """CREATE TABLE IF NOT EXISTS strategy_scores (
        error_type VARCHAR, strategy_id VARCHAR, score FLOAT, last_updated TIMESTAMP, samples INTEGER,
        metrics JSON, PRIMARY KEY (error_type, strategy_id))""",
    "adaptive_timeouts": """CREATE TABLE IF NOT EXISTS adaptive_timeouts (
        error_type VARCHAR, strategy_id VARCHAR, timeout FLOAT, last_updated TIMESTAMP,
        PRIMARY KEY (error_type, strategy_id))""",
    "progressive_recovery": """CREATE TABLE IF NOT EXISTS progressive_recovery (
        error_id VARCHAR PRIMARY KEY, current_level INTEGER, last_updated TIMESTAMP, history JSON)""",
    "schema_versions": """CREATE TABLE IF NOT EXISTS schema_versions (
        component VARCHAR PRIMARY KEY, version INTEGER, last_updated TIMESTAMP)""",
}
FLAKY = ("flaky", "flaky_1", "flaky_2", "flaky_3", "flaky_4")  # a primary and the four errors aggregated into it
PERFORMANCE_TABLES = ("recovery_performance", "strategy_scores", "adaptive_timeouts", "progressive_recovery",
                      "schema_versions")


def seed_id() -> str:
    return f"err_{uuid.uuid4().hex}"


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def context_data(exc: BaseException, component: str, operation: str, related: dict[str, Any] | None = None,
                 metadata: dict[str, Any] | None = None, when: datetime | None = None) -> str:
    """The seed's ``context_data`` JSON: its ErrorContext, stack trace included."""
    exc = _raised(exc)
    return json.dumps({
        "component": component, "operation": operation, "timestamp": (when or datetime.now()).isoformat(),
        "user_id": None, "request_id": None, "environment": {},
        "stack_trace": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "related_entities": related or {}, "metadata": metadata or {},
    })


@dataclass
class SeedDatabase:
    path: str
    ids: dict[str, str] = field(default_factory=dict)
    performance_rows: int = 0
    error_rows: int = 0  # occurrences the seed recorded: one row each

    def connect(self) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(self.path)


def build_seed_database(path: str, tables: tuple[str, ...] = tuple(SEED_DDL), rows: bool = True) -> SeedDatabase:
    """The seed's tables; with ``rows``, a history of open, retried, failed and resolved errors,
    recovery records, scores, timeouts and levels, as the seed's code would have left them."""
    db = SeedDatabase(path)
    con = duckdb.connect(path)
    try:
        for t in tables:
            con.execute(SEED_DDL[t])
        con.execute("CREATE TABLE worker_nodes (worker_id VARCHAR PRIMARY KEY, hostname VARCHAR, status VARCHAR)")
        con.execute("INSERT INTO worker_nodes VALUES ('w1', 'rack1-node3', 'active')")
        if "schema_versions" in tables:
            con.execute("INSERT INTO schema_versions VALUES ('performance_recovery', 1, ?)", [datetime.now()])
        if rows:
            _fill(con, db, tables)
    finally:
        con.close()
    return db


def _fill(con: duckdb.DuckDBPyConnection, db: SeedDatabase, tables: tuple[str, ...]) -> None:
    now = datetime.now()
    ids = db.ids
    for name in ("refused", "refused_2", "refused_3", "retried", "exhausted", "retrying", "manual", "db", *FLAKY):
        ids[name] = seed_id()
    ids["orphan_level"] = seed_id()  # a level of an error whose report the seed never persisted
    if "error_reports" in tables:
        refused = ConnectionRefusedError(111, "Connection refused")
        rows = [
            # One error seen three times by the seed's aggregator: the primary's count is 3, as
            # persisted after the other two joined it; the other two are rows of their own.
            (ids["refused"], "network", "medium", str(refused), "worker", "heartbeat",
             now - timedelta(minutes=50), 0, None, 3, "open", None, None,
             context_data(refused, "worker", "heartbeat", {"worker_id": "w1"}, when=now - timedelta(minutes=50)),
             "{}"),
            (ids["refused_2"], "network", "medium", str(refused), "worker", "heartbeat",
             now - timedelta(minutes=40), 0, None, 1, "open", None, None,
             context_data(refused, "worker", "heartbeat", {"worker_id": "w1"}), "{}"),
            (ids["refused_3"], "network", "high", str(refused), "worker", "heartbeat",
             now - timedelta(minutes=30), 0, None, 1, "open", None, None,
             context_data(refused, "worker", "heartbeat", {"worker_id": "w2"}, {"attempt": 2}), "{}"),
            # retry_operation succeeded on the second retry
            (ids["retried"], "timeout", "medium", "read timed out", "scheduler", "fetch_results",
             now - timedelta(hours=3), 2, True, 1, "resolved", now - timedelta(hours=3) + timedelta(seconds=2),
             "retry", context_data(TimeoutError("read timed out"), "scheduler", "fetch_results"),
             json.dumps({"retry_attempts": [{"attempt": 1, "delay_ms": 500}, {"attempt": 2, "delay_ms": 1000}],
                         "successful_retry": {"attempt": 2}})),
            # retry_operation gave up
            (ids["exhausted"], "resource", "high", "Cannot allocate memory", "task", "run_test",
             now - timedelta(hours=2), 3, False, 1, "failed", None, None,
             context_data(MemoryError("Cannot allocate memory"), "task", "run_test", {"task_id": "t7"}),
             json.dumps({"failed_retries": {"attempts": 4, "last_error": "Cannot allocate memory"}})),
            # the process died while retry_operation was waiting between attempts
            (ids["retrying"], "database", "medium", "database is locked", "database", "insert_result",
             now - timedelta(minutes=10), 1, None, 1, "retrying", None, None,
             context_data(OSError("database is locked"), "database", "insert_result"),
             json.dumps({"retry_attempts": [{"attempt": 1, "delay_ms": 500}]})),
            # resolved by hand through POST /api/errors/{id}/resolve
            (ids["manual"], "configuration", "medium", "missing setting 'api_url'", "coordinator", "load_config",
             now - timedelta(days=2), 0, None, 1, "resolved", now - timedelta(days=1), "fixed the config",
             context_data(KeyError("missing setting 'api_url'"), "coordinator", "load_config"),
             json.dumps({"manual_resolution": {"details": {"by": "ops"}}})),
            (ids["db"], "database", "critical", "Connection to the results database lost", "database", "connect",
             now - timedelta(minutes=5), 0, None, 1, "open", None, None,
             context_data(ConnectionError("Connection to the results database lost"), "database", "connect"),
             "{}"),
        ]
        # One error seen five times, then resolved by hand: the seed's resolve wrote the primary
        # again (its count 5 and its four relations); the four others stayed rows of their own,
        # still "open", with a count of 1 (issue 29: they were groups of their own after migration).
        lost = RuntimeError("lease on queue q1 lost")
        for i, name in enumerate(FLAKY):
            when = now - timedelta(hours=5) + timedelta(minutes=i)
            primary = i == 0
            rows.append((ids[name], "coordination", "high" if i == 3 else "medium", str(lost), "scheduler", "assign",
                         when, 0, None, len(FLAKY) if primary else 1, "resolved" if primary else "open",
                         now - timedelta(hours=4) if primary else None, "restarted the scheduler" if primary else None,
                         context_data(lost, "scheduler", "assign", {"task_id": f"t{i}"}, {"queue": "q1"}, when),
                         json.dumps({"manual_resolution": {"details": {"by": "ops"}}} if primary else
                                    {"note": f"seen {i}"})))
        con.executemany("INSERT INTO error_reports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.error_rows = len(rows)
    if "error_relations" in tables:
        con.executemany("INSERT INTO error_relations VALUES (?, ?, 'aggregated')",
                        [(ids["refused"], ids["refused_2"]), (ids["refused"], ids["refused_3"]),
                         *[(ids[FLAKY[0]], ids[name]) for name in FLAKY[1:]]])
        con.execute("INSERT INTO error_relations VALUES (?, NULL, 'aggregated')", [ids["manual"]])
    if "recovery_performance" in tables:
        perf: list[tuple[Any, ...]] = []

        def record(sid: str, et: str, seconds: float, ok: bool, when: datetime, error: str, level: int,
                   **extra: Any) -> None:
            perf.append((len(perf) + 1, sid, sid, et, seconds, ok, when, None, 2, 2 if ok else 0,
                         json.dumps({"cpu_percent": 3.5, "memory_percent": 0.4}), 0.05 if ok else 0.3,
                         0.95 if ok else 0.6,
                         json.dumps({"error_id": error, "component": "worker", "operation": "heartbeat",
                                     "recovery_level": level, **extra})))

        for i in range(10):  # retry mostly fails for the refused connection, worker recovery works
            when = now - timedelta(minutes=45 - 4 * i)
            record("retry", "network", 0.2 + 0.01 * i, i % 5 == 0, when, ids["refused"], 1)
            if i % 5:
                record("worker", "network", 2.0 + 0.1 * i, True, when + timedelta(seconds=5), ids["refused_2"], 2)
        record("worker", "network", 30.0, False, now - timedelta(minutes=2), ids["refused"], 2, timeout=True)
        record("database", "database", 1.5, True, now - timedelta(minutes=4), ids["db"], 4)
        record("database", "database", 0.1, False, now - timedelta(minutes=3), ids["db"], 4,
               exception="ConnectionException: still down")
        record("retry", "network", 0.3, True, now - timedelta(days=40), ids["refused"], 1)  # older than a month
        db.performance_rows = len(perf)
        con.executemany("INSERT INTO recovery_performance VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", perf)
        # a record the seed wrote without its strategy (cannot be evidence: skipped and counted)
        con.execute("INSERT INTO recovery_performance (id, error_type, execution_time, success, timestamp) "
                    "VALUES (999, 'network', 1.0, true, ?)", [now])
    if "strategy_scores" in tables:
        metrics = {"success_rate": 0.2, "execution_time": 0.2, "time_score": 0.99, "impact_score": 0.3,
                   "stability_score": 0.6, "task_recovery_rate": 0.2}
        # the seed ranked retry first for network errors (its score weighs time and impact), where
        # the same records replayed here favour worker recovery
        con.execute("INSERT INTO strategy_scores VALUES ('network', 'retry', 0.877, ?, 10, ?)",
                    [now, json.dumps(metrics)])
        con.execute("INSERT INTO strategy_scores VALUES ('network', 'worker', 0.822, ?, 9, ?)",
                    [now, json.dumps({**metrics, "success_rate": 0.89, "execution_time": 2.4})])
        # a score whose records are gone: evidence from its summary
        con.execute("INSERT INTO strategy_scores VALUES ('coordination', 'coordinator', 0.8, ?, 8, ?)",
                    [now, json.dumps({**metrics, "success_rate": 0.75, "execution_time": 4.0})])
    if "adaptive_timeouts" in tables:
        con.execute("INSERT INTO adaptive_timeouts VALUES ('network', 'worker', 45.0, ?)", [now])
        con.execute("INSERT INTO adaptive_timeouts VALUES ('network', 'retry', 10.1, ?)", [now])
        con.execute("INSERT INTO adaptive_timeouts VALUES ('coordination', 'coordinator', 67.5, ?)", [now])
    if "progressive_recovery" in tables:
        def step(old: int, sid: str) -> dict[str, Any]:
            return {"timestamp": now.isoformat(), "old_level": old, "new_level": old + 1, "strategy_id": sid,
                    "success": False, "details": {}}

        con.execute("INSERT INTO progressive_recovery VALUES (?, 3, ?, ?)",
                    [ids["refused"], now, json.dumps([step(1, "retry"), step(2, "worker")])])
        con.execute("INSERT INTO progressive_recovery VALUES (?, 2, ?, ?)",  # left stale by the seed
                    [ids["retried"], now, json.dumps([step(1, "retry")])])
        con.execute("INSERT INTO progressive_recovery VALUES (?, 4, ?, ?)",
                    [ids["orphan_level"], now, json.dumps([step(1, "retry"), step(2, "worker"), step(3, "worker")])])
        con.execute("INSERT INTO progressive_recovery VALUES (?, NULL, ?, '[]')", [seed_id(), now])
