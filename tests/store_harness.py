"""Store implementations for the contract suite (``test_store_contract.py``), one class each.

A kind knows how to make a store over storage of its own (a fresh DuckDB file in a temp dir,
or a PostgreSQL database created and dropped for the test), how to break it the way a crashed
database link would, and how to write what the contract tests need below the store (a previous
release's layout, a newer schema, a damaged row). SQL is allowed here: this is the store's own
test code. To add an implementation: a class with the same methods, an entry in ``KINDS``, and
its name in ``STORE_KINDS``.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import asyncpg
import duckdb

from coordinator_plugins.error_handling.storage.base import Store
from coordinator_plugins.error_handling.storage.duckdb import DuckDBStore
from coordinator_plugins.error_handling.storage.duckdb.migrations import CURRENT_VERSION
from coordinator_plugins.error_handling.storage.postgres import PostgresStore
from coordinator_plugins.error_handling.storage.postgres.schema import MIGRATIONS as PG_MIGRATIONS
from coordinator_plugins.error_handling.storage.postgres.schema import SCHEMA_VERSION as PG_VERSION

# The layout of the last release before versioned migrations (main at b7d3ea4), frozen: a file it
# wrote has these tables and no schema_version table.
PREVIOUS_LAYOUT = """
CREATE TABLE error_reports (error_id VARCHAR PRIMARY KEY, fingerprint VARCHAR, error_type VARCHAR,
    error_severity VARCHAR, severity_rank INTEGER, category VARCHAR, message VARCHAR, component VARCHAR,
    operation VARCHAR, worker_id VARCHAR, task_id VARCHAR, hardware_id VARCHAR, exception_type VARCHAR,
    stack_trace VARCHAR, metadata JSON, first_seen TIMESTAMPTZ, last_seen TIMESTAMPTZ, aggregated_count BIGINT,
    retry_count INTEGER, retry_successful BOOLEAN, resolution_status VARCHAR, resolution_time TIMESTAMPTZ,
    resolution_strategy VARCHAR, regression_count INTEGER, recovery_level INTEGER, recovery_details JSON);
CREATE TABLE error_occurrences (error_id VARCHAR, occurred_at TIMESTAMPTZ, message VARCHAR, worker_id VARCHAR,
    task_id VARCHAR, hardware_id VARCHAR, metadata JSON);
CREATE SEQUENCE recovery_performance_seq;
CREATE TABLE recovery_performance (id BIGINT PRIMARY KEY DEFAULT nextval('recovery_performance_seq'),
    strategy_id VARCHAR, strategy_name VARCHAR, error_type VARCHAR, execution_time FLOAT, success BOOLEAN,
    timestamp TIMESTAMPTZ, hardware_id VARCHAR, affected_tasks INTEGER, recovered_tasks INTEGER,
    resource_usage JSON, impact_score FLOAT, stability_score FLOAT, context JSON, error_id VARCHAR,
    level INTEGER, outcome VARCHAR);
CREATE TABLE strategy_scores (error_type VARCHAR, strategy_id VARCHAR, score FLOAT, last_updated TIMESTAMPTZ,
    samples INTEGER, metrics JSON, PRIMARY KEY (error_type, strategy_id));
CREATE TABLE adaptive_timeouts (error_type VARCHAR, strategy_id VARCHAR, timeout FLOAT,
    last_updated TIMESTAMPTZ, srtt FLOAT, rttvar FLOAT, samples INTEGER, PRIMARY KEY (error_type, strategy_id));
CREATE TABLE progressive_recovery (error_id VARCHAR PRIMARY KEY, current_level INTEGER,
    last_updated TIMESTAMPTZ, history JSON);
CREATE TABLE learner_state (key VARCHAR PRIMARY KEY, state JSON, last_updated TIMESTAMPTZ);
"""

# What write_previous_layout stores (the test reads it back through the store)
PREVIOUS_GROUP = "0123456789abcdef0123456789abcdef"
PREVIOUS_ROWS = [
    f"""INSERT INTO error_reports VALUES ('{PREVIOUS_GROUP}', 'fp1', 'network', 'high', 3, 'connection',
        'peer reset', 'w', 'send', 'w1', 't1', NULL, 'ConnectionResetError', NULL, '{{"k": 1}}',
        now() - INTERVAL 1 HOUR, now() - INTERVAL 1 MINUTE, 7, 0, NULL, 'open', NULL, NULL, 0, 2, '{{}}')""",
    f"""INSERT INTO error_occurrences SELECT '{PREVIOUS_GROUP}', now() - INTERVAL 1 MINUTE - i * INTERVAL 1 SECOND,
        'peer reset', 'w1', 't1', NULL, NULL FROM range(7) r(i)""",
    f"""INSERT INTO recovery_performance (strategy_id, strategy_name, error_type, execution_time, success,
        timestamp, affected_tasks, recovered_tasks, resource_usage, impact_score, stability_score, context,
        error_id, level, outcome) VALUES ('retry', 'Retry', 'network', 0.2, true, now(), 1, 1, '{{}}', 0.1, 0.9,
        '{{}}', '{PREVIOUS_GROUP}', 1, 'success')""",
    """INSERT INTO adaptive_timeouts VALUES ('network', 'retry', 4.5, now(), 1.0, 0.5, 3)""",
    f"""INSERT INTO progressive_recovery VALUES ('{PREVIOUS_GROUP}', 2, now(), '[{{"level": 1, "ok": false}}]')""",
]


class DuckDBKind:
    """The embedded store over a DuckDB file in the test's temp dir."""

    name = "duckdb"
    version = CURRENT_VERSION

    def __init__(self, tmp: Path) -> None:
        self.path = str(tmp / "contract.duckdb")

    def new(self, **options: Any) -> DuckDBStore:
        """A store over this kind's storage (the same storage on every call: a restart)."""
        return DuckDBStore(self.path, **options)

    def break_link(self, store: Store) -> None:
        """Make the store's writes fail until ``heal``, as a crashed database link would."""
        assert isinstance(store, DuckDBStore)
        store.break_connection()

    async def heal(self, store: Store) -> None:
        assert await store.reconnect()

    def write_previous_layout(self) -> None:
        """Storage as the last release without schema versions left it, with rows."""
        con = duckdb.connect(self.path)
        try:
            con.execute(PREVIOUS_LAYOUT)
            for sql in PREVIOUS_ROWS:
                con.execute(sql)
        finally:
            con.close()

    def write_newer_schema(self, version: int) -> None:
        """Storage that a newer release wrote: its schema version is ``version``."""
        con = duckdb.connect(self.path)
        try:
            con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMPTZ)")
            con.execute("INSERT INTO schema_version VALUES (?, now())", [version])
        finally:
            con.close()

    def damage_group(self, error_id: str) -> None:
        """Give a stored group an error type no version knows (the store must be closed)."""
        con = duckdb.connect(self.path)
        try:
            con.execute("UPDATE error_reports SET error_type = 'no_such_type' WHERE error_id = ?", [error_id])
        finally:
            con.close()

    def cleanup(self) -> None:
        pass


def _in_thread(coro: Any) -> Any:
    """Run ``coro`` to completion on a loop of its own (the test's loop may be running)."""
    out: list[Any] = []
    errors: list[BaseException] = []

    def main() -> None:
        try:
            out.append(asyncio.run(coro))
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)

    t = threading.Thread(target=main)
    t.start()
    t.join(120)
    if errors:
        raise errors[0]
    return out[0] if out else None


# The PostgreSQL store's first layout (schema version 1) with the rows above, in its SQL: the
# migrations after it must bring it to the current version in place.
PG_PREVIOUS_ROWS = [
    f"""INSERT INTO error_reports VALUES ('{PREVIOUS_GROUP}', 'fp1', 'network', 'high', 3, 'connection',
        'peer reset', 'w', 'send', 'w1', 't1', NULL, 'ConnectionResetError', NULL, '{{"k": 1}}',
        now() - INTERVAL '1 hour', now() - INTERVAL '1 minute', 7, 0, NULL, 'open', NULL, NULL, 0, 2, '{{}}')""",
    f"""INSERT INTO error_occurrences SELECT '{PREVIOUS_GROUP}', now() - INTERVAL '1 minute' - i * INTERVAL '1 second',
        'peer reset', 'w1', 't1', NULL, NULL FROM generate_series(0, 6) AS r(i)""",
    f"""INSERT INTO recovery_performance (strategy_id, strategy_name, error_type, execution_time, success,
        timestamp, affected_tasks, recovered_tasks, resource_usage, impact_score, stability_score, context,
        error_id, level, outcome) VALUES ('retry', 'Retry', 'network', 0.2, true, now(), 1, 1, '{{}}', 0.1, 0.9,
        '{{}}', '{PREVIOUS_GROUP}', 1, 'success')""",
    """INSERT INTO adaptive_timeouts VALUES ('network', 'retry', 4.5, now(), 1.0, 0.5, 3)""",
    f"""INSERT INTO progressive_recovery VALUES ('{PREVIOUS_GROUP}', 2, now(), '[{{"level": 1, "ok": false}}]')""",
]


class PostgresKind:
    """The PostgreSQL store over a database of its own on the test server (tests/pg_harness.py),
    created for the test and dropped after it. Skips without a server; fails under CI=true."""

    name = "postgres"
    version = PG_VERSION

    def __init__(self, tmp: Path) -> None:
        from tests.pg_harness import create_database

        self.url = _in_thread(create_database())

    def new(self, **options: Any) -> PostgresStore:
        return PostgresStore(self.url, options.pop("coordinator_id", "contract"), **options)

    def break_link(self, store: Store) -> None:
        assert isinstance(store, PostgresStore)
        store.break_connection()

    async def heal(self, store: Store) -> None:
        assert await store.reconnect()

    def _sql(self, *statements: str) -> None:
        async def run() -> None:
            con = await asyncpg.connect(self.url)
            try:
                for sql in statements:
                    await con.execute(sql)
            finally:
                await con.close()

        _in_thread(run())

    def write_previous_layout(self) -> None:
        first = PG_MIGRATIONS[0]
        self._sql(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), "
            "description TEXT)",
            first[2],
            f"INSERT INTO schema_version (version, description) VALUES ({first[0]}, 'the first layout')",
            *PG_PREVIOUS_ROWS,
        )

    def write_newer_schema(self, version: int) -> None:
        self._sql("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ, description TEXT)",
                  f"INSERT INTO schema_version VALUES ({int(version)}, now(), 'from a newer release')")

    def damage_group(self, error_id: str) -> None:
        self._sql(f"UPDATE error_reports SET error_type = 'no_such_type' WHERE error_id = '{error_id}'")

    def cleanup(self) -> None:
        from tests.pg_harness import drop_database

        _in_thread(drop_database(self.url))


KINDS: dict[str, Any] = {"duckdb": DuckDBKind, "postgres": PostgresKind}
STORE_KINDS = ["duckdb", "postgres"]  # the implementations every contract test runs against
