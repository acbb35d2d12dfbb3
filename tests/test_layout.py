"""Issue 14: SQL and database drivers live in error_handling/storage/ and nowhere else.

Every Python file of the package is parsed: an ``import duckdb`` / ``import asyncpg`` (or a
``from`` import of them) outside the storage package fails, and so does a string literal that is
SQL. The reference coordinator's own database module (``reference/db.py``) is its own business.
Tests other than the store's own read data through the API or the store: no SQL in them either.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "coordinator_plugins"
STORAGE = PACKAGE / "error_handling" / "storage"
ALLOWED = {PACKAGE / "reference" / "db.py"}
DRIVERS = {"duckdb", "asyncpg", "psycopg", "psycopg2", "sqlite3"}
# the store's own tests, and the fixture that writes a database the way the seed code did
STORE_TESTS = {"test_store_contract.py", "store_harness.py", "test_migrations.py", "test_seed_migration.py",
               "seed_database.py", "test_layout.py"}
SQL = re.compile(
    r"\b(SELECT\s+(\*|\w|\()|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(OR\s+REPLACE\s+)?"
    r"(TABLE|INDEX|SEQUENCE|VIEW)|DROP\s+(TABLE|INDEX|SEQUENCE)|ALTER\s+TABLE|BEGIN\s+TRANSACTION|ATTACH\s+')"
)


def offences(path: Path, check_imports: bool = True) -> list[str]:
    """What breaks the rule in ``path``. In tests, a line marked ``# sql-allowed: <why>`` may hold
    SQL that is not a read of the plugin's data (an attack string sent as input, a fake
    coordinator's own database)."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    tree = ast.parse(text, str(path))
    found = []
    for node in ast.walk(tree):
        if check_imports and isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in DRIVERS:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: import {alias.name}")
        elif check_imports and isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in DRIVERS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
            if not check_imports and "# sql-allowed:" in lines[node.lineno - 1]:
                continue
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: SQL {node.value[:60]!r}")
    return found


def package_files() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if STORAGE not in p.parents and p not in ALLOWED]


def test_no_sql_and_no_database_driver_outside_storage() -> None:
    files = package_files()
    assert len(files) > 50 and PACKAGE / "error_handling" / "integration.py" in files
    problems = [o for p in files for o in offences(p)]
    assert not problems, "SQL or a database driver outside error_handling/storage/:\n" + "\n".join(problems)


def test_tests_read_through_the_api_or_the_store() -> None:
    files = [p for p in sorted((ROOT / "tests").glob("*.py")) if p.name not in STORE_TESTS]
    assert len(files) > 10
    problems = [o for p in files for o in offences(p, check_imports=False)]
    assert not problems, "raw SQL in a test that is not the store's own:\n" + "\n".join(problems)


@pytest.mark.parametrize("source, bad", [
    ("import duckdb\n", True),
    ("import asyncpg as pg\n", True),
    ("from duckdb import connect\n", True),
    ("q = 'SELECT count(*) FROM error_reports'\n", True),
    ("q = 'DELETE FROM t WHERE x < 1'\n", True),
    ("q = 'UPDATE error_reports SET x = 1'\n", True),
    ("q = 'INSERT INTO t VALUES (1)'\n", True),
    ("doc = 'select the strategy from the candidates'\n", False),
    ("import json\nSELECTIONS = ('adaptive', 'score')\n", False),
])
def test_the_check_catches_what_it_should(tmp_path: Path, source: str, bad: bool) -> None:
    path = ROOT / "tests" / "_layout_probe.py"  # under ROOT, as the files checked are
    path.write_text(source)
    try:
        assert bool(offences(path)) is bad
    finally:
        path.unlink()
