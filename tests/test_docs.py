"""Issue 28 item 7 and issue 32: every claim of the documentation (README.md and ``docs/**/*.md``)
is checked against the code: its Python blocks run, its config examples are valid, the
``coordinator_plugins`` names it mentions import, the routes it names are routes of the app, the
config keys its tables list are keys of the schema (and every key of the schema is documented),
the files it names exist; the parts generated from the code (config and HTTP references, metrics,
the Protocol's and the built-ins' tables, the import graph) are what regenerating them gives; the
README stays short and the site has exactly its pages. See docs_harness.py."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import inspect
import os
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from coordinator_plugins.error_handling import ErrorReport, RecoveryLevel, RecoveryStrategy
from coordinator_plugins.error_handling.config import KEYS
from coordinator_plugins.reference import build_app
from coordinator_plugins.reference.checks import config_problems
from coordinator_plugins.reference.settings import _SECURITY_RULES, _SETTING_RULES
from tests import docs_harness as H

sys.path.insert(0, str(H.ROOT / "scripts"))
import docs_tables
import import_graph
import openapi_md

DOCS = H.doc_files()
IDS = [str(p.relative_to(H.ROOT)) for p in DOCS]
KNOWN_KEYS = {"[coordinator]": set(_SETTING_RULES) | set(_SECURITY_RULES), "[plugins.error_handling]": set(KEYS)}


def _doc(path: Path) -> H.Doc:
    return H.parse(path)


# -- the Python blocks run -------------------------------------------------------------------------------
async def run_blocks(doc: H.Doc, where: Path) -> list[str]:
    """Run the document's Python blocks in order in one module of their own; the failures."""
    name = "docs_" + "".join(c if c.isalnum() else "_" for c in doc.name)
    module = types.ModuleType(name)
    module.__file__ = str(doc.path)
    sys.modules[name] = module
    cwd = os.getcwd()
    os.chdir(where)
    failures = []
    try:
        for block in doc.blocks:
            if block.lang != "python" or (block.marker and block.marker[0] == "skip"):
                continue
            try:
                code = compile(block.code, f"{doc.name}:{block.line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
                result = eval(code, module.__dict__)
                if inspect.iscoroutine(result):
                    await asyncio.wait_for(result, 120)
            except Exception as exc:
                failures.append(f"{doc.name} {block.where}: {type(exc).__name__}: {exc}")
    finally:
        os.chdir(cwd)
        sys.modules.pop(name, None)
    return failures


@pytest.mark.parametrize("path", DOCS, ids=IDS)
async def test_every_python_block_runs(path: Path, tmp_path: Path) -> None:
    doc = _doc(path)
    failures = await run_blocks(doc, tmp_path)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("path", DOCS, ids=IDS)
def test_markers_are_few_and_say_why(path: Path) -> None:
    doc = _doc(path)
    marked = [b for b in doc.blocks if b.marker]
    for block in marked:
        kind, argument = block.marker or ("", "")
        assert argument, f"{doc.name} {block.where}: a docs-test marker says why (skip) or which file"
        if kind == "file":
            text = (H.ROOT / argument).read_text(encoding="utf-8")
            assert block.code == text, f"{doc.name} {block.where}: the block is not {argument} as it is"
    python = [b for b in doc.blocks if b.lang == "python"]
    skipped = [b for b in marked if b.marker and b.marker[0] == "skip"]
    assert len(skipped) <= max(1, len(python) // 4), f"{doc.name}: {len(skipped)} of {len(python)} blocks skipped"


@pytest.mark.parametrize("path", DOCS, ids=IDS)
def test_every_config_example_is_valid(path: Path) -> None:
    doc = _doc(path)
    for block, config in H.config_blocks(doc):
        assert config_problems(config) == [], f"{doc.name} {block.where}"


# -- names, routes, keys, files ----------------------------------------------------------------------------
@pytest.mark.parametrize("path", DOCS, ids=IDS)
def test_every_name_it_mentions_imports(path: Path) -> None:
    missing = []
    for name in sorted(H.mentioned_names(_doc(path))):
        try:
            H.resolve(name)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not missing, "\n".join(missing)


def _routes(tmp: Path) -> set[tuple[str, str]]:
    """(method, canonical path) of every route of the reference coordinator with the plugin."""
    app = build_app({"coordinator": {"database": str(tmp / "c.duckdb")},
                     "plugins": {"enabled": ["error_handling"], "error_handling": {"database": str(tmp / "e.duckdb")}}})
    out = set()
    for route in app.router.routes():
        canon = route.resource.canonical if route.resource is not None else ""
        out.add((route.method, H.canonical(canon)))
    return out


def route_problems(mentioned: set[tuple[str, str]], routes: set[tuple[str, str]]) -> list[str]:
    problems = []
    for method, path in sorted(mentioned):
        candidates = {H.canonical(path), H.canonical("/api" + path)}
        methods = {method, "GET"} if method == "HEAD" else {method}
        if not any((m, c) in routes for m in methods for c in candidates):
            problems.append(f"{method} {path}: no such route")
    return problems


@pytest.mark.parametrize("path", DOCS, ids=IDS)
def test_every_route_it_names_is_a_route(path: Path, tmp_path: Path) -> None:
    problems = route_problems(H.mentioned_routes(_doc(path)), _routes(tmp_path))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", DOCS, ids=IDS)
def test_every_key_its_tables_list_is_a_key(path: Path) -> None:
    problems = []
    for table, keys, line in H.key_tables(_doc(path)):
        problems += [f"line {line}: {table} {k}: not a key" for k in keys if k not in KNOWN_KEYS[table]]
    assert not problems, "\n".join(problems)


def test_every_key_is_documented() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in DOCS)
    listed: dict[str, set[str]] = {table: set() for table in KNOWN_KEYS}
    for path in DOCS:
        for table, in_table, _ in H.key_tables(_doc(path)):
            listed[table] |= set(in_table)
    assert listed["[coordinator]"] and listed["[plugins.error_handling]"]
    for table, known in KNOWN_KEYS.items():
        # in a key table, or (the extensions beyond the SPEC) named in the text
        missing = sorted(k for k in known if k not in listed[table] and f"`{k}`" not in text)
        assert not missing, f"{table} keys the docs never mention: {missing}"


def key_problems(doc: H.Doc) -> list[str]:
    every = set().union(*KNOWN_KEYS.values()) | {"enabled"}  # [plugins] enabled
    return [f"line {line}: {table or 'config'} {key}: not a key"
            for table, key, line in H.mentioned_keys(doc) if key not in (KNOWN_KEYS[table] if table else every)]


@pytest.mark.parametrize("path", DOCS, ids=IDS)
def test_every_key_its_prose_names_is_a_key(path: Path) -> None:
    problems = key_problems(_doc(path))
    assert not problems, "\n".join(problems)


def test_the_key_check_catches_a_misspelt_key(tmp_path: Path) -> None:
    doc = _probe(tmp_path, "\n".join([
        "Set `[coordinator] hots` and `auto_recovr = false`, not `app = web.Application()`.", "",
        "## `[plugins.error_handling]`", "", "- `verify_windw`: a note.", "- `verify_window`: a note.", "",
        "## Elsewhere", "", "- `anything`: not a key list.", "",
        "```toml", "x = `auto_recovr = 1`", "```",
    ]))
    assert key_problems(doc) == ["line 1: [coordinator] hots: not a key", "line 1: config auto_recovr: not a key",
                                 "line 5: [plugins.error_handling] verify_windw: not a key"]


@pytest.mark.parametrize("path", DOCS, ids=IDS)
def test_every_file_it_names_exists(path: Path) -> None:
    missing = sorted(f for f in H.mentioned_files(_doc(path)) if not H.file_exists(f))
    assert not missing, f"files named but missing: {missing}"


# -- the generated parts: regenerated, nothing changes ------------------------------------------------------
def test_regenerating_the_generated_docs_changes_nothing() -> None:
    """Every table drawn from the code (docs_tables.TABLES) and the import graph of the
    Architecture page, regenerated now: each page is what is committed."""
    drawn = docs_tables.draw_all()
    for name, (page, _) in docs_tables.TABLES.items():
        text = (H.ROOT / "docs" / page).read_text(encoding="utf-8")
        assert docs_tables.page_table(text, name) is not None, f"docs/{page} lost the {name} table's markers"
        assert docs_tables.with_tables(text, {name: drawn[name]}) == text, (
            f"docs/{page}: the {name} table changed: run python scripts/docs_tables.py --write")
    assert docs_tables.stale(drawn) == []
    figure = import_graph.figure()
    assert import_graph.with_figure(import_graph.PAGE.read_text(encoding="utf-8"), figure) == \
        import_graph.PAGE.read_text(encoding="utf-8"), "run python scripts/import_graph.py --write"


def test_the_regeneration_check_catches_a_stale_table(tmp_path: Path) -> None:
    drawn = docs_tables.draw_all()
    page = (H.ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    row = next(line for line in drawn["config-plugin"].splitlines() if line.startswith("| `retention_days`"))
    stale = docs_tables.with_tables(page, {"config-plugin": drawn["config-plugin"].replace(row + "\n", "")})
    assert stale != page and docs_tables.page_table(stale, "config-plugin") != drawn["config-plugin"]
    assert docs_tables.with_tables(stale, drawn) == page


def test_the_generated_references_cover_the_code() -> None:
    """Every config key, every route of the served documents and every metric is in its page."""
    from coordinator_plugins.reference.security import SECURITY_KEYS
    from coordinator_plugins.reference.settings import CoordinatorSettings

    config = (H.ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    plugin = docs_tables.page_table(config, "config-plugin") or ""
    coordinator = docs_tables.page_table(config, "config-coordinator") or ""
    assert [ln.split("`")[1] for ln in plugin.splitlines()[2:]] == list(KEYS)
    assert [ln.split("`")[1] for ln in coordinator.splitlines()[2:]] == [
        *(f.name for f in dataclasses.fields(CoordinatorSettings)), *SECURITY_KEYS]
    http = (H.ROOT / "docs" / "http-api.md").read_text(encoding="utf-8")
    for name, document in (("http-plugin", openapi_md.plugin_document()),
                           ("http-coordinator", openapi_md.coordinator_document())):
        table = docs_tables.page_table(http, name) or ""
        for path, ops in document["paths"].items():
            for method in ops:
                assert f"#### `{method.upper()} {path}`" in table, f"{name}: {method.upper()} {path} missing"


def test_a_key_without_a_meaning_is_refused() -> None:
    @dataclasses.dataclass
    class Probe:
        documented: int = 1
        """What it means."""
        undocumented: int = 2

    with pytest.raises(ValueError, match=r"Probe\.undocumented: no docstring"):
        docs_tables._key_rows(Probe, {"documented": "an integer", "undocumented": "an integer"})


# -- the README and the site ------------------------------------------------------------------------------
PAGES = ["index.md", "getting-started.md", "integrating.md", "recovery.md", "configuration.md", "http-api.md",
         "operations.md", "migrating.md", "performance.md", "reliability.md", "architecture.md", "reference.md"]


def test_the_readme_is_short_and_links_into_the_site() -> None:
    text = (H.ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 200
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)", text))
    assert linked >= set(PAGES) - {"index.md"}, sorted(set(PAGES) - linked)
    assert "](docs/dashboard.png)" in text and (H.ROOT / "docs" / "dashboard.png").stat().st_size > 10_000
    python = [b for b in H.parse(H.ROOT / "README.md").blocks if b.lang == "python"]
    assert len(python) == 1 and len(python[0].code.strip().splitlines()) <= 10


def test_the_site_has_exactly_its_pages() -> None:
    """The nav of mkdocs.yml lists the pages of docs/, each once, and nothing else (docs/_new/ is
    where other work waits to be moved into them; the site excludes it)."""
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    config = yaml.load((H.ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_Loader)
    nav = [next(iter(entry.values())) for entry in config["nav"]]
    assert nav == PAGES
    on_disk = sorted(p.name for p in (H.ROOT / "docs").glob("*.md"))
    assert on_disk == sorted(PAGES)
    assert config.get("strict") is True
    assert "_new/" in config["exclude_docs"]


def _table(header: str) -> list[str]:
    """The names in the first cells of the Integrating page's table whose first header cell is ``header``."""
    lines = (H.ROOT / "docs" / "integrating.md").read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and line.strip("| ").startswith(header):
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows += re.findall(r"`(\w+)`", row.split("|")[1])
            return rows
    raise AssertionError(f"docs/integrating.md has no table headed {header!r}")


def test_the_error_report_table_lists_every_field() -> None:
    assert sorted(_table("`ErrorReport` field")) == sorted(f.name for f in dataclasses.fields(ErrorReport))


class _Capture(RecoveryStrategy):
    """Keeps the error_info it is given (and succeeds: it is the test's probe, not a fix)."""

    seen: list[dict[str, Any]] = []

    def __init__(self, coordinator: Any) -> None:
        super().__init__(coordinator, "capture", RecoveryLevel.LOW)

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        self.seen.append(dict(error_info))
        return True


async def test_the_error_info_table_lists_every_key(tmp_path: Path) -> None:
    from coordinator_plugins.error_handling import setup

    app = web.Application()
    integ = setup(app, None, {"database": str(tmp_path / "e.duckdb"), "builtin_strategies": [],
                              "auto_recover": False, "verify_window": 0})
    integ.add_custom_strategy("capture", _Capture(None))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await integ.handle_error(ConnectionResetError("peer reset"), {
            "component": "api", "worker_id": "w1", "task_id": "t1", "callable": print, "args": (), "kwargs": {}})
    finally:
        await runner.cleanup()
    assert sorted(_table("`error_info` key")) == sorted(_Capture.seen[-1])


# -- the checks catch drift -----------------------------------------------------------------------------------
def _probe(tmp_path: Path, text: str) -> H.Doc:
    path = tmp_path / "probe.md"
    path.write_text(text)
    return H.parse(path)


async def test_the_checks_catch_what_they_should(tmp_path: Path) -> None:
    doc = _probe(tmp_path, "\n".join([
        "Set `coordinator_plugins.error_handling.NoSuchName` and `coordinator_plugins.nomodule.x`.",
        "Call `GET /api/no-such-route` or `POST /errors/{id}/resolve`.",
        "Read `tests/no_such_test.py` and `storage/base.py`.",
        "`[coordinator]` keys:", "", "| key | default |", "|---|---|", "| `hots` | 1 |", "| `host` | x |", "",
        "```python", "raise RuntimeError('stale example')", "```", "",
        "<!-- docs-test: skip: it needs a farm -->", "```python", "from coordinator_plugins import nothing_here", "```",
        "", "```toml", "[coordinator]", "prot = 1", "```",
    ]))
    names = sorted(H.mentioned_names(doc))
    assert names == ["coordinator_plugins.error_handling.NoSuchName", "coordinator_plugins.nomodule.x",
                     "coordinator_plugins.nothing_here"]
    for name in names:
        with pytest.raises((ImportError, AttributeError)):
            H.resolve(name)
    routes = _routes(tmp_path)
    assert route_problems(H.mentioned_routes(doc), routes) == ["GET /api/no-such-route: no such route"]
    assert sorted(f for f in H.mentioned_files(doc) if not H.file_exists(f)) == ["tests/no_such_test.py"]
    assert list(H.key_tables(doc)) == [("[coordinator]", ["hots", "host"], 6)]
    failures = await run_blocks(doc, tmp_path)
    assert len(failures) == 1 and "stale example" in failures[0]
    [(_, config)] = list(H.config_blocks(doc))
    assert config_problems(config)[0].startswith("coordinator.prot: unknown key")


# -- the version, and the changelog ---------------------------------------------------------------------------
def test_the_version_lives_in_one_place() -> None:
    """``coordinator_plugins.__version__`` is the version: the metadata reads it (setup.cfg), the
    changelog has its section, and no other file of the package or its metadata writes it out."""
    import coordinator_plugins

    version = coordinator_plugins.__version__
    assert "version = attr: coordinator_plugins.__version__" in (H.ROOT / "setup.cfg").read_text(encoding="utf-8")
    files = [*H.PACKAGE.rglob("*.py"), *(H.ROOT / n for n in ("setup.cfg", "setup.py", "pyproject.toml"))]
    again = sorted(str(f.relative_to(H.ROOT)) for f in files
                   if f.name != "__init__.py" or f.parent != H.PACKAGE
                   if f.is_file() and re.search(rf"[\"']{re.escape(version)}[\"']", f.read_text(encoding="utf-8")))
    assert again == [], f"the version written out again (read coordinator_plugins.__version__ instead): {again}"
    changelog = (H.ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog and f"## [{version}]" in changelog
