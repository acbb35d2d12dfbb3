"""Tables of the README drawn from the code, so that they cannot drift from it (issue 28 item 8).

- ``protocol``: the methods of ``coordinator_plugins.contract.CoordinatorProtocol``, each with
  its signature, its docstring and the built-in strategies that call it;
- ``builtins``: each built-in strategy: its id, level, the error categories it acts on, the
  coordinator methods without which it is not applicable, and the others it calls.

What a built-in needs and calls is read from its module's source: the names in its
``has_methods(coordinator, ...)`` checks (those in ``is_applicable`` are what it cannot run
without) and the Protocol's method names it (or a helper of ``strategies/builtin.py`` it calls)
uses. Each table sits in the README between ``<!-- docs-table: NAME ... -->`` and
``<!-- /docs-table -->``; ``python scripts/docs_tables.py --write`` redraws them, and
``tests/test_docs.py`` fails when one is out of date.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

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


TABLES: dict[str, Callable[[], str]] = {"protocol": protocol_table, "builtins": builtins_table}


def _pattern(name: str) -> re.Pattern[str]:
    # the table between its markers, never past the first end marker (an empty table too)
    return re.compile(re.escape(BEGIN.format(name=name)) + r"\n(?:((?:(?!" + re.escape(END) + r").)*?)\n)??"
                      + re.escape(END), re.S)


def readme_table(text: str, name: str) -> str | None:
    """The table ``name`` as the README has it, or None when its markers are missing."""
    m = _pattern(name).search(text)
    return (m.group(1) or "") if m else None


def with_tables(text: str) -> str:
    """``text`` with every table redrawn from the code."""
    for name, draw in TABLES.items():
        block = f"{BEGIN.format(name=name)}\n{draw()}\n{END}"
        text = _pattern(name).sub(lambda _m, b=block: b, text)  # type: ignore[misc]
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="redraw the tables in README.md")
    args = parser.parse_args(argv)
    readme = ROOT / "README.md"
    if args.write:
        readme.write_text(with_tables(readme.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    for name, draw in TABLES.items():
        print(f"{BEGIN.format(name=name)}\n{draw()}\n{END}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
