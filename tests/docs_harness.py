"""What the documentation claims, read out of its Markdown so that tests can check it against
the code (issue 28 item 7). ``tests/test_docs.py`` runs the checks on README.md and on every
``docs/**/*.md``.

A document's claims:

- its fenced code blocks: ``python`` ones are run, in order, in one namespace per document (a
  module of its own, so that ``"module:Class"`` paths naming it resolve), with top-level
  ``await``, in a temporary directory; ``toml`` ones that hold a ``[coordinator]`` or ``[plugins]``
  table are checked as a config;
- the ``coordinator_plugins`` names it mentions (dotted, anywhere) and the ones its Python blocks
  import: each must import;
- the routes it names as `` `METHOD /path` ``: each must be a route of the app (under the API
  prefix or at the root);
- the config keys its key tables list (a table whose first header cell is ``key``, or
  ``[coordinator] key``; the ``[coordinator]`` or ``[plugins.error_handling]`` named last above
  it, or in that cell, says which table);
- the config keys its prose names: `` `[coordinator] key` ``, `` `key = value` `` (a TOML
  assignment: a key of either table), and the bullets `` - `key`: ... `` under a heading that
  names a table (as the Configuration reference's notes are written);
- the files it names (`` `tests/x.py` ``, `` `storage/base.py` ``, `` `examples/x.toml` ``): each
  must exist.

A block that cannot run on its own carries a marker on the line before its fence, an HTML
comment that Markdown does not show, with its reason; use them sparingly:

- ``<!-- docs-test: skip: REASON -->``: not run (its imports are still checked);
- ``<!-- docs-test: file PATH -->``: the block is the file at PATH (relative to the repository),
  checked to be identical to it, and run like any other block.
"""

from __future__ import annotations

import ast
import importlib
import re
import textwrap
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "coordinator_plugins"
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(skip|file)\b:?\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)\s*$")
DOTTED = re.compile(r"\bcoordinator_plugins(?:\.[A-Za-z_]\w*)+")
ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE|HEAD) (/[^`\s]*)`")
FILE = re.compile(r"`((?:[\w.-]+/)*[\w.-]+\.(?:py|toml))`")
TABLES = ("[coordinator]", "[plugins.error_handling]")


def doc_files() -> list[Path]:
    """README.md, CHANGELOG.md and every Markdown file under docs/ (the site's pages, and the
    text waiting in docs/_new/ to be moved into them)."""
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]


@dataclass
class Block:
    lang: str
    code: str
    line: int  # of the opening fence, 1-based
    marker: tuple[str, str] | None = None  # (kind, argument)

    @property
    def where(self) -> str:
        return f"line {self.line}"


@dataclass
class Doc:
    path: Path
    text: str
    blocks: list[Block] = field(default_factory=list)
    prose: str = ""  # the text outside code blocks

    @property
    def name(self) -> str:
        return str(self.path.relative_to(ROOT)) if self.path.is_relative_to(ROOT) else self.path.name


def parse(path: Path) -> Doc:
    lines = path.read_text(encoding="utf-8").splitlines()
    doc = Doc(path, "\n".join(lines))
    prose: list[str] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            prose.append(lines[i])
            i += 1
            continue
        indent, fence, lang = m.groups()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (lines[j].strip() == fence and lines[j].startswith(indent)):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        before = next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
        mk = MARKER.match(before)
        doc.blocks.append(Block(lang.lower(), textwrap.dedent("\n".join(body)) + "\n", i + 1,
                                (mk.group(1), mk.group(2)) if mk else None))
        i = j + 1
    doc.prose = "\n".join(prose)
    return doc


# -- names ---------------------------------------------------------------------------------------------
def resolve(dotted: str) -> object:
    """The object a dotted ``coordinator_plugins...`` name names: the longest module prefix
    imported, the rest looked up as attributes. Raises ImportError or AttributeError."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def mentioned_names(doc: Doc) -> set[str]:
    """Dotted names anywhere in the document, and what its Python blocks import from the package."""
    names = {m.group(0).rstrip(".") for m in DOTTED.finditer(doc.text)}
    for block in doc.blocks:
        if block.lang != "python":
            continue
        for node in ast.walk(ast.parse(block.code)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("coordinator_plugins"):
                names |= {f"{node.module}.{a.name}" for a in node.names if a.name != "*"}
            elif isinstance(node, ast.Import):
                names |= {a.name for a in node.names if a.name.startswith("coordinator_plugins")}
    return names


# -- routes, keys, files -------------------------------------------------------------------------------
def mentioned_routes(doc: Doc) -> set[tuple[str, str]]:
    return {(m.group(1), m.group(2)) for m in ROUTE.finditer(doc.prose)}


def canonical(path: str) -> str:
    """A path with its query dropped and every ``{placeholder}`` the same."""
    return re.sub(r"\{[^}]*\}", "{}", path.split("?", 1)[0].rstrip("/") or "/")


def key_tables(doc: Doc) -> Iterator[tuple[str, list[str], int]]:
    """(table name, keys, line) for each config key table of the document's prose."""
    lines = doc.text.splitlines()
    table_name: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.lstrip().startswith("|"):
            for name in TABLES:
                if f"`{name}`" in line:
                    table_name = name
            i += 1
            continue
        header = [c.strip() for c in line.strip().strip("|").split("|")]
        start = i
        rows = []
        i += 2  # the header and its rule
        while i < len(lines) and lines[i].lstrip().startswith("|"):
            rows.append(lines[i].strip().strip("|").split("|")[0])
            i += 1
        if header[0].replace("`", "") not in ("key", *(f"{t} key" for t in TABLES)):
            continue  # another table of keys (the context's, error_info's): not config keys
        named = next((n for n in TABLES if n in header[0]), table_name)
        found = [k for cell in rows for k in re.findall(r"`(\w+)`", cell)]
        if named is not None:
            yield named, found, start + 1


TABLE_KEY = re.compile(r"`\[(coordinator|plugins\.error_handling)\] (\w+)`")
ASSIGNMENT = re.compile(r"`(\w+) = ([^`]+)`")
HEADING = re.compile(r"^#+ ")
BULLET = re.compile(r"^- `(\w+)`(?:,|:| and )")


def mentioned_keys(doc: Doc) -> Iterator[tuple[str | None, str, int]]:
    """(table, or None for either; key; line) for each config key the prose names."""
    section: str | None = None
    fenced = {i for b in doc.blocks for i in range(b.line, b.line + b.code.count("\n") + 2)}
    for number, line in enumerate(doc.text.splitlines(), 1):
        if number in fenced:
            continue
        if HEADING.match(line):
            section = next((n for n in TABLES if f"`{n}`" in line), None)
        for m in TABLE_KEY.finditer(line):
            yield f"[{m.group(1)}]", m.group(2), number
        for m in ASSIGNMENT.finditer(line):
            try:
                tomllib.loads(m.group(0).strip("`"))
            except tomllib.TOMLDecodeError:
                continue  # Python, not a config line
            yield None, m.group(1), number
        b = BULLET.match(line)
        if b and section is not None:
            yield section, b.group(1), number


def mentioned_files(doc: Doc) -> set[str]:
    return {m.group(1) for m in FILE.finditer(doc.prose) if not m.group(1).startswith("../")}


# Files of another project that the docs name: the seed framework's (in its own repository,
# under test/distributed_testing/; the docs name them by that path, or this one bare name).
SEED_TREE = "test/distributed_testing/"
ELSEWHERE = {"enhanced_error_handling_integration.py"}


def file_exists(name: str) -> bool:
    """Relative to the repository, the package, the plugin's package or tests/ (how the docs
    name them); another project's files (ELSEWHERE) are not ours to check."""
    bases = (ROOT, PACKAGE, PACKAGE / "error_handling", ROOT / "tests")
    if name in ELSEWHERE or name.startswith(SEED_TREE):
        return True
    return any((base / name).is_file() for base in bases)


def config_blocks(doc: Doc) -> Iterator[tuple[Block, dict[str, object]]]:
    for block in doc.blocks:
        if block.lang == "toml":
            config = tomllib.loads(block.code)
            if "coordinator" in config or "plugins" in config:
                yield block, config
