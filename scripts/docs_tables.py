"""The generated parts of the documentation, drawn from the code so that they cannot drift from it.

Each sits in a page of ``docs/`` between ``<!-- docs-table: NAME ... -->`` and
``<!-- /docs-table -->``; ``python scripts/docs_tables.py --write`` redraws every one,
``--check`` exits 1 naming those out of date, and ``tests/test_docs.py`` fails when one is.

- ``protocol`` (integrating.md): the methods of ``coordinator_plugins.contract.CoordinatorProtocol``,
  each with its signature, its docstring and the built-in strategies that call it;
- ``builtins`` (integrating.md): each built-in strategy: its id, level, the error categories it
  acts on, the coordinator methods without which it is not applicable, and the others it calls;
- ``config-plugin`` and ``config-coordinator`` (configuration.md): every key of the
  ``[plugins.error_handling]`` table (the fields of ``ErrorHandlingConfig``) and of the
  ``[coordinator]`` table (``CoordinatorSettings`` and ``SecuritySettings``): its default, what it
  accepts (the rule that checks it) and its meaning (the field's docstring);
- ``http-plugin`` and ``http-coordinator`` (http-api.md): every route of the OpenAPI documents
  that the plugin and the reference coordinator serve (see ``scripts/openapi_md.py``);
- ``metrics`` (operations.md): the Prometheus metrics the plugin serves at ``/metrics``;
- ``classify-types`` and ``classify-categories`` (integrating.md): the classifier's rules, how a
  report gets its error type and then its category, and per category what sends a report there,
  its severity, the built-ins that act on it and an example that is checked (see
  ``scripts/classify_md.py``).

What a built-in needs and calls is read from its module's source: the names in its
``has_methods(coordinator, ...)`` checks (those in ``is_applicable`` are what it cannot run
without) and the Protocol's method names it (or a helper of ``strategies/builtin.py`` it calls)
uses.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

STRATEGIES = ROOT / "coordinator_plugins" / "error_handling" / "strategies"
BEGIN = "<!-- docs-table: {name}: drawn by scripts/docs_tables.py; do not edit -->"
END = "<!-- /docs-table -->"


def protocol_methods() -> dict[str, Callable[..., object]]:
    """The Protocol's methods, in the order the class defines them."""
    from coordinator_plugins.contract import CoordinatorProtocol

    return {name: fn for name, fn in vars(CoordinatorProtocol).items()
            if not name.startswith("_") and callable(fn)}


def _calls(tree: ast.AST, methods: set[str]) -> tuple[set[str], set[str]]:
    """(Protocol methods named in ``tree``: attributes and has_methods' strings; names called)."""
    named: set[str] = set()
    called: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in methods:
            named.add(node.attr)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            called.add(node.func.id)
            if node.func.id == "has_methods":
                named |= {a.value for a in node.args if isinstance(a, ast.Constant) and a.value in methods}
    return named, called


def _needs(tree: ast.Module, methods: set[str]) -> list[tuple[str, ...]]:
    """The ``has_methods`` checks of a strategy's ``is_applicable``: each the Protocol methods it
    asks for together; one of them passing is needed (a strategy checks a second set only when
    the first is missing: the ``coordinator`` strategy's ``reload_state``)."""
    needs: list[tuple[str, ...]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "is_applicable":
            for call in ast.walk(node):
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "has_methods":
                    needs.append(tuple(sorted(a.value for a in call.args
                                              if isinstance(a, ast.Constant) and a.value in methods)))
    return needs


def strategy_uses() -> dict[str, tuple[list[tuple[str, ...]], set[str]]]:
    """Per built-in id: (the sets of methods it is not applicable without, every method it may call)."""
    from coordinator_plugins.error_handling.strategies import BUILTIN_CLASSES

    methods = set(protocol_methods())
    helpers = {node.name: node for node in ast.parse((STRATEGIES / "builtin.py").read_text()).body
               if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}

    def through_helpers(called: set[str], seen: set[str]) -> set[str]:
        out: set[str] = set()
        for name in called & set(helpers) - seen:
            seen.add(name)
            named, more = _calls(helpers[name], methods)
            out |= named | through_helpers(more, seen)
        return out

    uses = {}
    for sid, cls in BUILTIN_CLASSES.items():
        tree = ast.parse(Path(inspect.getfile(cls)).read_text())
        named, called = _calls(tree, methods)
        uses[sid] = (_needs(tree, methods), named | through_helpers(called, set()))
    return uses


def _doc(fn: Callable[..., object]) -> str:
    text = " ".join((inspect.getdoc(fn) or "").split())
    return re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text).replace("|", "\\|")


def _signature(name: str, fn: Callable[..., object]) -> str:
    sig = str(inspect.signature(fn)).replace("(self, ", "(").replace("(self)", "()").replace("'", "")
    prefix = "async " if inspect.iscoroutinefunction(fn) else ""
    return f"`{prefix}{name}{sig}`".replace("|", "\\|")


def protocol_table() -> str:
    uses = strategy_uses()
    rows = ["| method | what it does | called by |", "|---|---|---|"]
    for name, fn in protocol_methods().items():
        users = ", ".join(f"`{sid}`" for sid, (_, calls) in uses.items() if name in calls) or "none"
        rows.append(f"| {_signature(name, fn)} | {_doc(fn)} | {users} |")
    return "\n".join(rows)


def _categories(cats: frozenset[str] | None) -> str:
    from coordinator_plugins.error_handling import ErrorCategory

    every = {c.value for c in ErrorCategory}
    if cats is None or set(cats) >= every:
        return "all"
    if len(cats) > len(every) / 2:
        return "all but " + ", ".join(f"`{c}`" for c in sorted(every - set(cats)))
    return ", ".join(f"`{c}`" for c in sorted(cats))


def builtins_table() -> str:
    from coordinator_plugins.error_handling.strategies import BUILTIN_CLASSES

    uses = strategy_uses()
    rows = ["| id | level | categories it acts on | acts only when the coordinator has | it may also call |",
            "|---|---|---|---|---|"]
    for sid, cls in BUILTIN_CLASSES.items():
        strategy = cls(None)  # type: ignore[call-arg]
        needs, calls = uses[sid]
        need = " or ".join(", ".join(f"`{m}`" for m in group) for group in needs) or "nothing of the coordinator"
        also = ", ".join(f"`{m}`" for m in sorted(calls - {m for g in needs for m in g})) or "nothing"
        rows.append(f"| `{sid}` | {strategy.level.name} | {_categories(cls.categories)} | {need} | {also} |")
    return "\n".join(rows)


def _field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (a string right after the field), by name."""
    tree = ast.parse(Path(inspect.getfile(cls)).read_text(encoding="utf-8"))
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    docs: dict[str, str] = {}
    for before, after in zip(node.body, node.body[1:], strict=False):
        if (isinstance(before, ast.AnnAssign) and isinstance(before.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[before.target.id] = " ".join(after.value.value.split())
    return docs


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = None if f.name == "coordinator_id" else f.default_factory()
        if value is None:
            return "host name and pid"
    else:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, Mapping):
        value = dict(value)
    return "`" + json.dumps(value) + "`"


def _key_rows(cls: type, accepts: Mapping[str, str]) -> list[str]:
    docs = _field_docs(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.name not in docs:
            raise ValueError(f"{cls.__name__}.{f.name}: no docstring under the field (its meaning in the docs)")
        rows.append(f"| `{f.name}` | {_default(f)} | {_cell(accepts[f.name])} | {_cell(docs[f.name])} |")
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def config_plugin_table() -> str:
    from coordinator_plugins.error_handling.config import ErrorHandlingConfig, rules_of

    accepts = {k: r.accepted for k, r in rules_of(ErrorHandlingConfig).items()}
    return "\n".join(["| key | default | accepts | meaning |", "|---|---|---|---|",
                      *_key_rows(ErrorHandlingConfig, accepts)])


def config_coordinator_table() -> str:
    from coordinator_plugins.reference.security import SecuritySettings
    from coordinator_plugins.reference.settings import _SECURITY_RULES, _SETTING_RULES, CoordinatorSettings

    accepts = {k: r.accepted for k, r in (_SETTING_RULES | _SECURITY_RULES).items()}
    return "\n".join(["| key | default | accepts | meaning |", "|---|---|---|---|",
                      *_key_rows(CoordinatorSettings, accepts), *_key_rows(SecuritySettings, accepts)])


def http_plugin_table() -> str:
    import openapi_md

    return openapi_md.markdown(openapi_md.plugin_document())


def http_coordinator_table() -> str:
    import openapi_md

    return openapi_md.markdown(openapi_md.coordinator_document())


def metrics_table() -> str:
    import openapi_md

    return openapi_md.metrics_markdown()


def classify_types_table() -> str:
    import classify_md

    return classify_md.types_table()


def classify_categories_table() -> str:
    import classify_md

    return classify_md.categories_table()


DOCS = ROOT / "docs"
# each table: the page it sits in, and how it is drawn
TABLES: dict[str, tuple[str, Callable[[], str]]] = {
    "protocol": ("integrating.md", protocol_table),
    "builtins": ("integrating.md", builtins_table),
    "config-plugin": ("configuration.md", config_plugin_table),
    "config-coordinator": ("configuration.md", config_coordinator_table),
    "http-plugin": ("http-api.md", http_plugin_table),
    "http-coordinator": ("http-api.md", http_coordinator_table),
    "metrics": ("operations.md", metrics_table),
    "classify-types": ("integrating.md", classify_types_table),
    "classify-categories": ("integrating.md", classify_categories_table),
}


def _pattern(name: str) -> re.Pattern[str]:
    # the table between its markers, never past the first end marker (an empty table too)
    return re.compile(re.escape(BEGIN.format(name=name)) + r"\n(?:((?:(?!" + re.escape(END) + r").)*?)\n)??"
                      + re.escape(END), re.S)


def page_table(text: str, name: str) -> str | None:
    """The table ``name`` as the page has it, or None when its markers are missing."""
    m = _pattern(name).search(text)
    return (m.group(1) or "") if m else None


def with_tables(text: str, drawn: Mapping[str, str]) -> str:
    """``text`` with each table of ``drawn`` (name -> table) put between its markers."""
    for name, table in drawn.items():
        block = f"{BEGIN.format(name=name)}\n{table}\n{END}"
        text = _pattern(name).sub(lambda _m, b=block: b, text)  # type: ignore[misc]
    return text


def draw_all() -> dict[str, str]:
    """Every table drawn from the code today."""
    return {name: draw() for name, (_, draw) in TABLES.items()}


def stale(drawn: Mapping[str, str] | None = None) -> list[str]:
    """The tables whose page lacks their markers or holds another table than the code draws."""
    drawn = draw_all() if drawn is None else drawn
    out = []
    for name, (page, _) in TABLES.items():
        if page_table((DOCS / page).read_text(encoding="utf-8"), name) != drawn[name]:
            out.append(f"docs/{page}: {name}")
    return out


def write(drawn: Mapping[str, str] | None = None) -> None:
    drawn = draw_all() if drawn is None else drawn
    for page in sorted({page for page, _ in TABLES.values()}):
        path = DOCS / page
        text = path.read_text(encoding="utf-8")
        mine = {name: drawn[name] for name, (p, _) in TABLES.items() if p == page}
        new = with_tables(text, mine)
        if new != text:
            path.write_text(new, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="redraw the tables in their docs/ pages")
    mode.add_argument("--check", action="store_true", help="exit 1 when a table of docs/ is out of date")
    args = parser.parse_args(argv)
    if args.write:
        write()
        return 0
    if args.check:
        found = stale()
        for line in found:
            print(f"{line}: out of date; run python scripts/docs_tables.py --write", file=sys.stderr)
        return 1 if found else 0
    for name, table in draw_all().items():
        print(f"{BEGIN.format(name=name)}\n{table}\n{END}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
