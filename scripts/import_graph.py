"""The import graph of ``coordinator_plugins``, read from the code (no module is imported).

Every ``import`` of the package counts, at module level or inside a function, except those under
``if TYPE_CHECKING:`` (they exist for the type checker only). The graph is drawn between folders
(``error_handling/storage/``, ``error_handling/web/``, ``reference/`` ...) and the top-level
modules of ``error_handling/`` (``integration.py``, ``plugin.py`` ...), as the Mermaid figure in
the documentation's Architecture page (``docs/architecture.md``); ``tests/test_layout.py`` checks its
rules against the same graph and that the figure on that page is the one this script draws from
the code today.

    python scripts/import_graph.py           # print the figure
    python scripts/import_graph.py --write   # rewrite the figure in docs/architecture.md
    python scripts/import_graph.py --check   # exit 1 when docs/architecture.md's figure is out of date
    python scripts/import_graph.py --cycles  # list the import circles between files, if any
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "coordinator_plugins"
PAGE = ROOT / "docs" / "architecture.md"
BEGIN = "<!-- import-graph: drawn by scripts/import_graph.py; do not edit -->"
END = "<!-- /import-graph -->"
# imported by nearly every module: drawn as a note, not as an edge from every node
BASE_MODULES = ("error_handling/model.py", "error_handling/config.py")


@dataclass(frozen=True, slots=True)
class Import:
    source: str  # the importing module, dotted
    target: str  # the imported module (a submodule when ``from package import submodule``)
    line: int
    type_checking: bool  # under ``if TYPE_CHECKING:``: for the type checker only


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    return {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(name: str, known: Iterable[str]) -> str:
    """The longest prefix of ``name`` that is a module of the package."""
    known = set(known)
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(source: str, text: str, known: set[str], is_package: bool = False) -> list[Import]:
    """The package's modules that ``text`` (the module ``source``) imports."""
    found: list[Import] = []
    package = source if is_package else source.rpartition(".")[0]

    def add(target: str, node: ast.stmt, tc: bool) -> None:
        if target == PACKAGE or target.startswith(PACKAGE + "."):
            target = _resolve(target, known)
            if target != source:
                found.append(Import(source, target, node.lineno, tc))

    def visit(nodes: Iterable[ast.AST], tc: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                visit(node.body, True)
                visit(node.orelse, tc)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name, node, tc)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")
                    parent = parent[: len(parent) - node.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    add(full if full in known else base, node, tc)
            else:
                visit(ast.iter_child_nodes(node), tc)

    visit(ast.parse(text).body, False)
    return found


def all_imports(root: Path = ROOT) -> list[Import]:
    modules = package_modules(root)
    known = set(modules)
    out: list[Import] = []
    for name, path in modules.items():
        out += imports_of(name, path.read_text(encoding="utf-8"), known, path.name == "__init__.py")
    return out


def graph(imports: Iterable[Import], type_checking: bool = False) -> dict[str, set[str]]:
    """source -> targets; without ``type_checking``, the imports that run."""
    g: dict[str, set[str]] = {}
    for imp in imports:
        if type_checking or not imp.type_checking:
            g.setdefault(imp.source, set()).add(imp.target)
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected parts of ``g`` with more than one node (Tarjan's, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    nodes = sorted(set(g) | {t for ts in g.values() for t in ts})
    for start in nodes:
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(g.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(g.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                part = []
                while True:
                    n = stack.pop()
                    on_stack.discard(n)
                    part.append(n)
                    if n == node:
                        break
                if len(part) > 1:
                    found.append(sorted(part))
    return sorted(found)


def _node(parts: list[str], depth: int) -> str:
    """The module ``parts`` (below ``coordinator_plugins``) as a node: its folder, ``depth``
    levels below ``coordinator_plugins`` or ``error_handling`` at most, or the module itself when
    it lies directly in one of those two."""
    base = 2 if parts[:1] == ["error_handling"] else 1
    package = (ROOT / PACKAGE / Path(*parts)).is_dir()
    folder = parts if package else parts[:-1]
    if len(folder) < base:
        return "/".join(parts) if package else "/".join(parts) + ".py"
    return "/".join(folder[: base - 1 + depth])


def folder_of(module: str) -> str:
    """The figure's node of a module: its folder below ``coordinator_plugins`` (``reference``,
    ``error_handling/storage``, ``error_handling/storage/duckdb``), or the module itself when it is
    a top-level module of the package or of ``error_handling`` (``httpio.py``,
    ``error_handling/plugin.py``). A package's ``__init__`` belongs to its folder."""
    parts = module.split(".")[1:]
    return _node(parts, 99) if parts else "(package)"


def layer_of(module: str) -> str:
    """The layer a module belongs to, for the layout's rules: as :func:`folder_of`, but a folder
    with its subfolders (``error_handling/storage/duckdb/writer.py`` is in ``error_handling/storage``)."""
    parts = module.split(".")[1:]
    return _node(parts, 1) if parts else "(package)"


def _graph_by(imports: Iterable[Import], node: Callable[[str], str], type_checking: bool) -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for imp in imports:
        if imp.type_checking and not type_checking:
            continue
        a, b = node(imp.source), node(imp.target)
        if a != b:
            g.setdefault(a, set()).add(b)
    return g


def folder_graph(imports: Iterable[Import], type_checking: bool = False) -> dict[str, set[str]]:
    """The imports between folders (the figure's nodes); without ``type_checking``, those that run."""
    return _graph_by(imports, folder_of, type_checking)


def layer_graph(imports: Iterable[Import], type_checking: bool = False) -> dict[str, set[str]]:
    """The imports between layers (folders with their subfolders)."""
    return _graph_by(imports, layer_of, type_checking)


def _node_id(name: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in name)


def mermaid(g: dict[str, set[str]]) -> str:
    """The folder graph as a Mermaid flowchart. The base modules most folders import are left
    out (the subgraph's title says so); a package's ``__init__`` is drawn as its own node."""
    nodes = sorted((set(g) | {t for ts in g.values() for t in ts}) - set(BASE_MODULES))
    inside = [n for n in nodes if n == "error_handling" or n.startswith("error_handling/")]
    lines = ["```mermaid", "flowchart LR",
             '  subgraph EH["error_handling/ (without model.py and config.py, which most folders import)"]']
    for n in inside:
        label = "__init__.py" if n == "error_handling" else n.removeprefix("error_handling/")
        lines.append(f'    {_node_id(n)}["{label}"]')
    lines.append("  end")
    for n in nodes:
        if n not in inside:
            lines.append(f'  {_node_id(n)}["{"__init__.py" if n == "(package)" else n}"]')
    for a in nodes:
        for b in sorted(g.get(a, ())):
            if b not in BASE_MODULES:
                lines.append(f"  {_node_id(a)} --> {_node_id(b)}")
    lines.append("```")
    return "\n".join(lines)


def figure(root: Path = ROOT) -> str:
    return mermaid(folder_graph(all_imports(root)))


def page_figure(text: str) -> str | None:
    """The figure between the markers of docs/architecture.md, or None when they are missing."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return None
    return text[start + len(BEGIN): end].strip("\n")


def with_figure(text: str, drawn: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"docs/architecture.md: the markers {BEGIN!r} and {END!r} are missing")
    return text[: start + len(BEGIN)] + "\n" + drawn + "\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the figure in docs/architecture.md")
    mode.add_argument("--check", action="store_true", help="exit 1 when docs/architecture.md's figure is out of date")
    mode.add_argument("--cycles", action="store_true", help="list the import circles between files")
    a = ap.parse_args(argv)
    if a.cycles:
        found = cycles(graph(all_imports()))
        for part in found:
            print(" <-> ".join(part))
        return 1 if found else 0
    drawn = figure()
    if a.write:
        PAGE.write_text(with_figure(PAGE.read_text(encoding="utf-8"), drawn), encoding="utf-8")
        return 0
    if a.check:
        if page_figure(PAGE.read_text(encoding="utf-8")) != drawn:
            print("docs/architecture.md: the import graph is out of date; run python scripts/import_graph.py --write",
                  file=sys.stderr)
            return 1
        return 0
    print(drawn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
