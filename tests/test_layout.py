"""The package's layout, read from its code (every file parsed, nothing imported).

Issue 14: SQL and database drivers live in error_handling/storage/ and nowhere else. An
``import duckdb`` / ``import asyncpg`` (or a ``from`` import of them) outside the storage package
fails, and so does a string literal that is SQL. The reference coordinator's own database module
(``reference/db.py``) is its own business. Tests other than the store's own read data through the
API or the store: no SQL in them either.

Issue 30: the layers (the Architecture page of the docs, ``docs/architecture.md``). The import graph
comes from ``scripts/import_graph.py``, which also draws that page's figure; each rule has a probe that
adds an offending import to the real graph and shows the rule fails.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "coordinator_plugins"
STORAGE = PACKAGE / "error_handling" / "storage"
# the reference coordinator's own databases: DuckDB, and PostgreSQL for a fleet (SPEC 10)
ALLOWED = {PACKAGE / "reference" / "db.py", PACKAGE / "reference" / "db_pg.py"}
DRIVERS = {"duckdb", "asyncpg", "psycopg", "psycopg2", "sqlite3"}
# the store's own tests, and the fixture that writes a database the way the seed code did
STORE_TESTS = {"test_store_contract.py", "store_harness.py", "test_migrations.py", "test_seed_migration.py",
               "seed_database.py", "test_layout.py", "test_postgres_store.py", "pg_harness.py"}
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


# -- issue 30: the layers ---------------------------------------------------------------------------
def _load_import_graph() -> Any:
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("import_graph", module)  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


G = _load_import_graph()


@functools.cache
def real_imports() -> tuple[Any, ...]:
    """The package's imports as the code has them now (read once per test run)."""
    return tuple(G.all_imports())


EH = "error_handling/"
# the modules above the parts: the facade, the composition root, the mounting, the entry points
TOP = {EH + m for m in ("integration.py", "assemble.py", "plugin.py", "install.py", "blocking.py")}
PARTS = {EH + f for f in ("storage", "seed", "intake", "learning", "strategies", "recovery", "fleet", "observe",
                          "web")}
# What each part never imports (besides the modules above the parts: no part does), at run time
# or for the type checker. A report flows intake -> recovery (-> strategies, learning); fleet
# keeps the members in step; observe reads the parts; web serves them through a port.
NEVER: dict[str, set[str]] = {
    "storage": {"seed", "intake", "learning", "strategies", "recovery", "fleet", "observe", "web"},
    "seed": {"strategies", "recovery", "fleet", "observe", "web"},
    "intake": {"seed", "learning", "strategies", "recovery", "fleet", "observe", "web"},
    "learning": {"seed", "intake", "recovery", "fleet", "observe", "web"},
    "strategies": {"seed", "intake", "learning", "recovery", "fleet", "observe", "web"},
    "recovery": {"seed", "intake", "fleet", "observe", "web"},
    "fleet": {"seed", "recovery", "observe", "web"},
    "observe": {"seed", "web"},
    "web": {"seed", "intake", "learning", "strategies", "fleet", "observe"},
}
MAX_LINES = 400

def layer_offences(imports: Iterable[Any]) -> list[str]:
    """The imports that break a rule of the layers."""
    found = []
    for imp in imports:
        a, b = G.layer_of(imp.source), G.layer_of(imp.target)
        where = f"{imp.source}:{imp.line} imports {imp.target}" + (" (TYPE_CHECKING)" if imp.type_checking else "")
        if a == b:
            continue
        if a in PARTS and b in TOP:
            found.append(f"{where}: a part imports the modules above the parts (give it a port)")
        if a in PARTS and b.removeprefix(EH) in NEVER[a.removeprefix(EH)]:
            found.append(f"{where}: {a} never imports {b}")
        if b == EH + "web" and a not in (EH + "assemble.py", EH + "plugin.py"):
            found.append(f"{where}: only assemble.py and plugin.py import web/")
        if b == EH + "assemble.py" and a not in (EH + "integration.py", EH + "plugin.py"):
            found.append(f"{where}: only the facade (integration.py) and plugin.py import the composition root")
    return found


def circles(imports: Iterable[Any]) -> list[str]:
    """Import circles among the imports that run (TYPE_CHECKING ones aside): between files, and
    between layers (a folder with its subfolders)."""
    running = list(imports)
    return ([" <-> ".join(c) for c in G.cycles(G.graph(running))]
            + [" <-> ".join(c) for c in G.cycles(G.layer_graph(running))])


def long_modules(files: list[Path]) -> list[str]:
    out = []
    for path in files:
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            out.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {n} lines")
    return out


def test_the_layers_hold() -> None:
    imports = real_imports()
    assert len(imports) > 300 and any(i.type_checking for i in imports)
    problems = layer_offences(imports)
    assert not problems, "imports that break the layout (docs/architecture.md):\n" + "\n".join(problems)


def test_no_import_circle() -> None:
    found = circles(real_imports())
    assert not found, "import circles (a TYPE_CHECKING import may close one; nothing else):\n" + "\n".join(found)


def test_no_module_of_error_handling_is_over_400_lines() -> None:
    files = sorted((PACKAGE / "error_handling").rglob("*.py"))
    assert len(files) > 60
    found = long_modules(files)
    assert not found, "split these by concern:\n" + "\n".join(found)


def test_the_architecture_figure_is_drawn_from_the_code() -> None:
    drawn = G.figure()
    assert "-->" in drawn and 'n_error_handling_storage["storage"]' in drawn
    committed = G.page_figure(G.PAGE.read_text(encoding="utf-8"))
    assert committed is not None, "docs/architecture.md lost the import graph's markers"
    assert committed == drawn, "the import graph changed: run python scripts/import_graph.py --write"


P = "coordinator_plugins.error_handling."
# modules a probe may import that need not exist (yet): the seed conversion's own package
TO_BE = {P + "seed", P + "seed.values"}


def _probe(module: str, source: str) -> list[Any]:
    """The real imports with those of ``source`` as the module ``module`` (coordinator_plugins.*)."""
    known = set(G.package_modules()) | TO_BE | {module}
    return [*real_imports(), *G.imports_of(module, source, known)]


@pytest.mark.parametrize("module, source", [
    # storage knows no domain (issue 30): not at run time, not lazily, not for the type checker
    (P + "storage.probe", "from coordinator_plugins.error_handling.intake.group import GroupIndex\n"),
    (P + "storage.duckdb.probe", "def f():\n    from coordinator_plugins.error_handling.learning import policy\n"),
    (P + "storage.postgres.probe", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                   "    from coordinator_plugins.error_handling.recovery import manager\n"),
    (P + "storage.probe", "import coordinator_plugins.error_handling.seed.values\n"),
    (P + "storage.probe", "from coordinator_plugins.error_handling.fleet import FleetLedger\n"),
    # only assemble.py and plugin.py import web/
    (P + "integration_probe", "from coordinator_plugins.error_handling.web.api import add_routes\n"),
    ("coordinator_plugins.demo.probe", "from coordinator_plugins.error_handling.web.timeline import Timeline\n"),
    # web, observe and fleet get ports, never the integration (not even for the type checker)
    (P + "web.probe", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from coordinator_plugins.error_handling.integration import Integration\n"),
    (P + "observe.probe", "from coordinator_plugins.error_handling import integration\n"),
    (P + "fleet.probe", "from coordinator_plugins.error_handling.blocking import BlockingIntegration\n"),
    # nobody but the facade and plugin.py imports the composition root
    (P + "recovery.probe", "from coordinator_plugins.error_handling.assemble import assemble\n"),
    ("coordinator_plugins.cli_probe", "from coordinator_plugins.error_handling.assemble import Parts\n"),
    # the flow: intake never imports recovery, fleet never recovery (it has a port), web never observe
    (P + "intake.probe", "from coordinator_plugins.error_handling.recovery.state import Targets\n"),
    (P + "fleet.probe", "from coordinator_plugins.error_handling.recovery.manager import RecoveryManager\n"),
    (P + "web.probe", "from coordinator_plugins.error_handling.observe.explain import Explainer\n"),
    (P + "learning.probe", "from coordinator_plugins.error_handling.observe.sampler import ResourceSampler\n"),
])
def test_the_layer_check_catches_a_forbidden_import(module: str, source: str) -> None:
    assert not layer_offences(real_imports())
    assert layer_offences(_probe(module, source))


@pytest.mark.parametrize("module, source, circle", [
    # a circle of files, and with it one of layers (model.py is below everything)
    (P + "model", "from coordinator_plugins.error_handling.intake.group import GroupIndex\n", True),
    # a circle of layers only: recovery is below observe
    (P + "recovery.probe", "def f():\n    from coordinator_plugins.error_handling.observe import metrics\n", True),
    # a circle between two files of one folder
    (P + "recovery.state", "from coordinator_plugins.error_handling.recovery.manager import RecoveryManager\n", True),
    # the same closed by a TYPE_CHECKING import: allowed
    (P + "recovery.state", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                           "    from coordinator_plugins.error_handling.recovery.manager import Manager\n", False),
])
def test_the_circle_check_catches_a_circle(module: str, source: str, circle: bool) -> None:
    assert not circles(real_imports())
    assert bool(circles(_probe(module, source))) is circle


@pytest.mark.parametrize("lines, long", [(MAX_LINES, False), (MAX_LINES + 1, True)])
def test_the_length_check_catches_a_long_module(tmp_path: Path, lines: int, long: bool) -> None:
    path = tmp_path / "probe.py"
    path.write_text("x = 1\n" * lines)
    assert bool(long_modules([path])) is long


def test_the_figure_check_catches_a_stale_figure() -> None:
    text = G.PAGE.read_text(encoding="utf-8")
    drawn = G.figure()
    edge = next(line for line in drawn.splitlines() if "-->" in line)
    stale = G.with_figure(text, drawn.replace(edge + "\n", ""))
    assert G.page_figure(stale) != drawn
    assert G.page_figure(G.with_figure(text, drawn)) == drawn
