"""The classifier's rules as Markdown tables (the ``classify-types`` and ``classify-categories``
tables of ``docs/integrating.md``), read from the code that applies them:

- the exception classes, from the ``issubclass`` checks of ``intake/rules.py``'s ``_class_rule``
  and DuckDB's classes grouped by ``database_error_kind``;
- the components and the message keywords, from ``COMPONENT_TYPES`` and ``_KEYWORDS``;
- each type's category rules, from ``category_of`` (its ``if`` chain, read for each type in
  turn: the first rule that holds decides);
- the severities from ``_DEFAULT_SEVERITY``, and the built-ins that act on each category from
  their declared ``categories``.

Each category has an example report (``EXAMPLES``); the table is not drawn when one of them is
classified elsewhere (``tests/test_docs.py`` also sends each through ``report_error``).
"""

from __future__ import annotations

import ast
import errno
import inspect
import json
from pathlib import Path
from typing import Any

from coordinator_plugins.error_handling import ErrorCategory, ErrorType
from coordinator_plugins.error_handling.intake import classify as classify_mod
from coordinator_plugins.error_handling.intake import rules

T = ErrorType

# An example report per category: (exception or None, message, context). Each is checked.
EXAMPLES: dict[str, tuple[BaseException | None, str, dict[str, Any]]] = {
    "connection": (ConnectionResetError("Connection reset by peer"), "", {"component": "api"}),
    "timeout": (TimeoutError("read timed out"), "", {"component": "api"}),
    "worker_offline": (None, "worker w3 missed 3 heartbeats", {"worker_id": "w3"}),
    "worker_crash": (None, "worker process crashed with signal 9", {"component": "worker", "worker_id": "w3"}),
    "worker_resource": (None, "scratch disk /scratch/job13 full after 375 MB", {"component": "worker"}),
    "worker_hang": (None, "worker hung: no progress for 600 s", {"component": "worker", "worker_id": "w3"}),
    "task_timeout": (TimeoutError("task exceeded 300 s"), "", {"component": "runner", "task_id": "t9"}),
    "task_error": (None, "test setup failed", {"component": "task", "task_id": "t9"}),
    "task_resource": (None, "out of memory", {"component": "runner", "task_id": "t9"}),
    "db_connection": (None, "database connection closed", {"component": "store"}),
    "db_query": (None, "query failed: Binder Error", {"component": "db"}),
    "db_integrity": (None, "duplicate key violates constraint", {"component": "database"}),
    "db_locked": (None, "Could not set lock on file tasks.duckdb", {}),
    "coordinator_error": (None, "assignment loop raised KeyError", {"component": "coordinator"}),
    "state_error": (None, "task t9 is running on two workers", {"component": "state"}),
    "coordinator_crash": (None, "fatal: event loop died", {"component": "coordinator"}),
    "scheduler_stalled": (None, "no assignment for 60 s", {"component": "scheduler"}),
    "auth_error": (None, "invalid token", {"component": "api"}),
    "unauthorized": (PermissionError("permission denied: /var/run/farm.sock"), "", {"component": "api"}),
    "system_resource": (None, "too many open files", {"component": "api"}),
    "disk_full": (OSError(errno.ENOSPC, "No space left on device"), "", {"component": "worker"}),
    "system_overload": (None, "load average 48 on 8 cores", {"component": "system"}),
    "dependency": (ImportError("No module named 'torch'"), "", {"component": "worker"}),
    "configuration": (None, "configuration key batch_size missing", {"component": "api"}),
    "validation": (ValueError("batch_size must be positive"), "", {"component": "api"}),
    "test_failure": (AssertionError("expected 3, got 4"), "", {"component": "api"}),
    "unknown": (None, "something odd happened", {}),
}


def _tree(module: Any) -> ast.Module:
    return ast.parse(Path(inspect.getfile(module)).read_text(encoding="utf-8"))


def _function(module: Any, name: str) -> ast.FunctionDef:
    return next(n for n in ast.walk(_tree(module)) if isinstance(n, ast.FunctionDef) and n.name == name)


def _member(node: ast.expr, enum: type[Any]) -> str | None:
    """``T.X`` / ``C.X`` -> the member's value; None for a constant None."""
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    assert isinstance(node, ast.Attribute), ast.unparse(node)
    return str(enum[node.attr].value)


def _code(text: str) -> str:
    return "`" + text.replace("|", "\\|") + "`"


# -- what decides the type ------------------------------------------------------------------------
def class_rules() -> list[tuple[list[str], str, str | None]]:
    """(class names, type, category or None) in the order ``_class_rule`` tries them."""
    from coordinator_plugins.error_handling.storage.duckdb.errors import NAMED_CLASSES, database_error_kind

    out: list[tuple[list[str], str, str | None]] = []
    kinds: dict[str, list[str]] = {}
    for name, cls in sorted(NAMED_CLASSES.items()):
        kind = database_error_kind(cls)
        if kind is not None and kind != "other" and cls.__name__ == name:
            kinds.setdefault(kind, []).append(name)
    for kind, (etype, cat) in rules._DATABASE_RULES.items():
        names = [f"DuckDB {n}" for n in kinds.get(kind, [])] or ["any other DuckDB exception"]
        out.append((names, etype.value, cat.value if cat else None))
    for node in _function(rules, "_class_rule").body:
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Call)
                and getattr(node.test.func, "id", "") == "issubclass"):
            classes, names = node.test.args[1], []
            while isinstance(classes, ast.BinOp):
                names.insert(0, ast.unparse(classes.right))
                classes = classes.left
            names.insert(0, ast.unparse(classes))
            ret = node.body[0]
            assert isinstance(ret, ast.Return) and isinstance(ret.value, ast.Tuple)
            type_value = _member(ret.value.elts[0], ErrorType)
            assert type_value is not None
            out.append((names, type_value, _member(ret.value.elts[1], ErrorCategory)))
    return out


def _sets(name: str) -> dict[str, list[str]]:
    """The tuples of ``T.X`` in the ``in`` tests on ``name`` in classify's ``_classify``."""
    found: dict[str, list[str]] = {}
    for node in ast.walk(_function(classify_mod, "_classify")):
        if (isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == name
                and isinstance(node.ops[0], ast.In) and isinstance(node.comparators[0], ast.Tuple)):
            found.setdefault(name, []).extend(str(_member(e, ErrorType)) for e in node.comparators[0].elts)
    return found


def _operation_words() -> dict[str, str]:
    """``"word" in operation.lower()`` tests of ``_classify`` -> the type they give."""
    out = {}
    for node in ast.walk(_function(classify_mod, "_classify")):
        if isinstance(node, ast.If):
            for cmp in ast.walk(node.test):
                if (isinstance(cmp, ast.Compare) and isinstance(cmp.left, ast.Constant)
                        and "operation" in ast.unparse(cmp.comparators[0])):
                    assign = node.body[0]
                    assert isinstance(assign, ast.Assign)
                    out[str(cmp.left.value)] = str(_member(assign.value, ErrorType))
    return out


# -- each type's category rules -------------------------------------------------------------------
_ERRNO_SETS = {"RESOURCE_ERRNOS": rules.RESOURCE_ERRNOS}


def _say(node: ast.expr) -> str:
    """A condition of ``category_of`` in words (the code's own text when it has no words here)."""
    if isinstance(node, ast.BoolOp):
        joiner = " and " if isinstance(node.op, ast.And) else " or "
        parts = [p for p in (_say(v) for v in node.values) if p]
        return joiner.join(f"({p})" if (" or " in p and joiner == " and ") else p for p in parts)
    if isinstance(node, ast.Name):
        return {"taskish": "a task context", "has_worker": "a `worker_id`", "has_task": "a `task_id`"}.get(
            node.id, _code(node.id))
    if isinstance(node, ast.Call):
        fn = ast.unparse(node.func)
        if fn == "re.search" and isinstance(node.args[0], ast.Constant):
            return f"the message matches {_code(str(node.args[0].value))}"
        if fn == "issubclass":
            return f"the class is (or subclasses) {_code(ast.unparse(node.args[1]))}"
        if fn == "isinstance":
            return f"the exception is an instance of {_code(ast.unparse(node.args[1]))}"
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        left, op, right = node.left, node.ops[0], node.comparators[0]
        lhs = ast.unparse(left)
        if isinstance(op, ast.IsNot) and isinstance(right, ast.Constant) and right.value is None and lhs == "cls":
            return ""  # said by the issubclass beside it
        what = {"low": "the message", "comp": "the component", "op": "the operation", "err": "the errno",
                "exc.status": "the HTTP status"}
        if isinstance(left, ast.Constant) and isinstance(op, ast.In | ast.NotIn):
            verb = "contains" if isinstance(op, ast.In) else "does not contain"
            return f"{what.get(ast.unparse(right), _code(ast.unparse(right)))} {verb} \"{left.value!s}\""
        if lhs in what:
            if isinstance(op, ast.Eq):
                value = right.attr if isinstance(right, ast.Attribute) else ast.literal_eval(right)
                return f"{what[lhs]} is {_code(str(value))}"
            if isinstance(op, ast.In | ast.NotIn):
                if isinstance(right, ast.Name) and right.id in _ERRNO_SETS:
                    values = sorted(errno.errorcode[e] for e in _ERRNO_SETS[right.id])
                else:
                    values = [str(v) for v in ast.literal_eval(right)]
                verb = "is one of" if isinstance(op, ast.In) else "is none of"
                return f"{what[lhs]} {verb} " + ", ".join(_code(v) for v in values)
    return _code(ast.unparse(node))


def _for_type(node: ast.expr, etype: ErrorType) -> ast.expr | bool:
    """``node`` with ``etype is T.X`` / ``etype in (...)`` decided for ``etype``: True, False, or
    what is left of it."""
    if isinstance(node, ast.Compare) and ast.unparse(node.left) == "etype":
        op, right = node.ops[0], node.comparators[0]
        values = [right] if isinstance(op, ast.Is | ast.IsNot) else list(getattr(right, "elts", []))
        hit = any(_member(v, ErrorType) == etype.value for v in values)
        return hit if isinstance(op, ast.Is | ast.In) else not hit
    if isinstance(node, ast.BoolOp):
        is_and = isinstance(node.op, ast.And)
        rest: list[ast.expr] = []
        for value in node.values:
            part = _for_type(value, etype)
            if part is (not is_and):
                return part  # or: one True; and: one False
            if part is not is_and:
                assert not isinstance(part, bool)
                rest.append(part)
        if not rest:
            return is_and
        return rest[0] if len(rest) == 1 else ast.BoolOp(op=node.op, values=rest)
    return node


def _outcomes(expr: ast.expr) -> str:
    """A return value of ``category_of`` in words: ``C.X``, or ``C.A if cond else C.B``."""
    if isinstance(expr, ast.IfExp):
        return f"{_outcomes(expr.body)} when {_say(expr.test)}, else {_outcomes(expr.orelse)}"
    return _code(str(_member(expr, ErrorCategory)))


def category_rules(etype: ErrorType) -> list[str]:
    """The rules ``category_of`` applies to ``etype``, in order: ``condition -> outcome`` (the
    first that holds decides)."""
    out: list[str] = []

    def walk(stmts: list[ast.stmt], prefix: str) -> bool:
        """Append the rules of ``stmts``; True when they always return."""
        for stmt in stmts:
            if isinstance(stmt, ast.Return) and stmt.value is not None:
                out.append(f"{prefix}otherwise {_outcomes(stmt.value)}" if out or prefix else _outcomes(stmt.value))
                return True
            if isinstance(stmt, ast.If):
                test = _for_type(stmt.test, etype)
                if test is False:
                    continue
                if test is True:
                    if walk(stmt.body, prefix):
                        return True
                    continue
                assert not isinstance(test, bool)
                body = stmt.body
                if len(body) == 1 and isinstance(body[0], ast.Return) and body[0].value is not None:
                    out.append(f"{prefix}{_say(test)}: {_outcomes(body[0].value)}")
                else:
                    # a block of rules under a condition: its rules, each with the condition
                    walk(body, f"{prefix}{_say(test)}, then ")
        return False

    walk(_function(rules, "category_of").body, "")
    return out


def _taskish() -> str:
    node = next(n for n in _function(rules, "category_of").body
                if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "taskish")
    return _say(node.value)


# -- the tables -------------------------------------------------------------------------------------
def types_table() -> str:
    classes = class_rules()
    comps: dict[str, list[str]] = {}
    for comp, etype in rules.COMPONENT_TYPES.items():
        comps.setdefault(etype.value, []).append(comp)
    for word, etype_value in _operation_words().items():
        comps.setdefault(etype_value, []).append(f"an operation containing \"{word}\"")
    keywords = {etype.value: (i + 1, pattern.pattern) for i, (pattern, etype) in enumerate(rules._KEYWORDS)}
    rows = ["| error type | exception classes (the category they fix) | components | message keywords "
            "(rule number) | its category: the first rule that holds |", "|---|---|---|---|---|"]
    for etype in ErrorType:
        cls = "; ".join(", ".join(_code(n) if not n.startswith("DuckDB") and not n.startswith("any") else n
                                  for n in names) + (f" ({_code(cat)})" if cat else "")
                        for names, t, cat in classes if t == etype.value) or "none"
        comp = ", ".join(c if c.startswith("an operation") else _code(c) for c in comps.get(etype.value, [])) or "none"
        kw = f"{keywords[etype.value][0]}: {_code(keywords[etype.value][1])}" if etype.value in keywords else "none"
        cats = "; ".join(f"{i}. {r}" for i, r in enumerate(category_rules(etype), 1))
        rows.append(f"| `{etype.value}` | {cls} | {comp} | {kw} | {cats} |")
    generic = ", ".join(f"`{t}`" for t in _sets("etype_or_none")["etype_or_none"])
    finer = ", ".join(f"`{t}`" for t in _sets("kw")["kw"])
    order = ", ".join(n if n.startswith(("DuckDB", "any")) else _code(n) for names, _, _ in classes for n in names)
    return "\n".join([*rows, "", f"Exception classes are tried in this order; the first that the class is (or "
                      f"subclasses) decides: {order}. A component whose type is {generic} (the generic ones) "
                      f"gives way to a message keyword whose type is {finer}. Keyword rules are tried by number, "
                      f"the first that matches deciding. A task context: {_taskish()}. Component and operation "
                      "are compared in lowercase, and the message is matched in lowercase."])


def check_examples() -> None:
    for cat, (exc, message, ctx) in EXAMPLES.items():
        found = classify_mod.classify(exc, message or str(exc), ctx.get("component", ""), ctx.get("operation", ""),
                                      has_task=bool(ctx.get("task_id")), has_worker=bool(ctx.get("worker_id")))
        if found.category.value != cat:
            raise ValueError(f"classify_md.EXAMPLES[{cat!r}] is classified {found.category.value}")
    missing = {c.value for c in ErrorCategory} - set(EXAMPLES)
    if missing:
        raise ValueError(f"classify_md.EXAMPLES: no example of {sorted(missing)}")


def _example(exc: BaseException | None, message: str, ctx: dict[str, Any]) -> str:
    what = f"{type(exc).__name__}({json.dumps(str(exc))})" if exc is not None else json.dumps(message)
    if isinstance(exc, OSError) and exc.errno:
        what = f"OSError(errno.{errno.errorcode[exc.errno]}, {json.dumps(exc.strerror)})"
    return _code(f"{what}, {json.dumps(ctx)}" if ctx else what)


def categories_table() -> str:
    from coordinator_plugins.error_handling.strategies import BUILTIN_CLASSES

    check_examples()
    by_cat: dict[str, list[str]] = {}
    for etype in ErrorType:
        for i, rule in enumerate(category_rules(etype), 1):
            for cat in ErrorCategory:
                if f"`{cat.value}`" in rule:
                    by_cat.setdefault(cat.value, []).append(f"`{etype.value}` rule {i}")
    rows = ["| category | from (type and rule; classes that fix it) | severity | built-ins that act on it | example |",
            "|---|---|---|---|---|"]
    for cat in ErrorCategory:
        src = ", ".join(by_cat.get(cat.value, []))
        classes = [", ".join(_code(n) if not n.startswith(("DuckDB", "any")) else n for n in names)
                   for names, _, c in class_rules() if c == cat.value]
        if classes:
            src = "; ".join([src, *classes]) if src else "; ".join(classes)
        acting = ", ".join(f"`{sid}`" for sid, cls in BUILTIN_CLASSES.items()
                           if cls.categories is None or cat.value in cls.categories) or "none"
        severity = rules.SEVERITY_BY_VALUE[cat.value].value
        rows.append(f"| `{cat.value}` | {src or 'none'} | {severity} | {acting} | {_example(*EXAMPLES[cat.value])} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(types_table())
    print()
    print(categories_table())
