"""Issue 14: the DuckDB store's numbered migrations (``storage/migrations.py``)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from coordinator_plugins.error_handling.storage.base import SchemaTooNew
from coordinator_plugins.error_handling.storage.duckdb.migrations import (
    CURRENT_VERSION,
    MIGRATIONS,
    Migration,
    migrate,
    stored_version,
)

NEXT = Migration(CURRENT_VERSION + 1, "a note per learner state",
                 ("ALTER TABLE learner_state ADD COLUMN note VARCHAR",))


def learner_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'learner_state'").fetchall()]


def test_steps_run_in_order_and_record_the_version(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "m.duckdb"))
    try:
        assert migrate(con) == (0, CURRENT_VERSION)
        assert migrate(con) == (CURRENT_VERSION, CURRENT_VERSION)  # nothing to do
        assert migrate(con, migrations=[*MIGRATIONS, NEXT]) == (CURRENT_VERSION, CURRENT_VERSION + 1)
        assert stored_version(con) == CURRENT_VERSION + 1 and "note" in learner_columns(con)
        assert con.execute("SELECT count(*) FROM schema_version").fetchone() == (1,)
        with pytest.raises(SchemaTooNew, match="newer than this version"):
            migrate(con)  # the code without step 2 refuses the file
    finally:
        con.close()


def test_a_failing_step_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "m.duckdb"))
    try:
        migrate(con)
        broken = Migration(NEXT.version, "half a step", (*NEXT.statements, "SELECT * FROM no_such_table"))
        with pytest.raises(duckdb.CatalogException):
            migrate(con, migrations=[*MIGRATIONS, broken])
        assert stored_version(con) == CURRENT_VERSION and "note" not in learner_columns(con)
        assert migrate(con, migrations=[*MIGRATIONS, NEXT]) == (CURRENT_VERSION, NEXT.version)
    finally:
        con.close()


def test_an_empty_file_and_an_unversioned_one_both_end_at_the_current_version(tmp_path: Path) -> None:
    from tests.store_harness import PREVIOUS_LAYOUT

    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    try:
        con.execute(PREVIOUS_LAYOUT)
        assert stored_version(con) == 0
        assert migrate(con) == (0, CURRENT_VERSION) and stored_version(con) == CURRENT_VERSION
    finally:
        con.close()
