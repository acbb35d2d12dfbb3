"""What the context keys mean here: the strings every report may carry (``context_strings``),
and the seed framework's ``related_entities`` and priority flags.

The seed's ``ErrorContext.related_entities`` is a dict (or an object with attributes) naming the
entities an error concerns. Its recovery read ``worker_id`` (a string) and ``task_id`` /
``task_ids`` (a string or a list) from it; ``worker_ids`` is read too, for symmetry. Any other key
(the seed's orchestrator put ``test_id`` there) is kept with the report but names no target.

The seed's classifier let three boolean context keys set the severity, strongest first:
``critical`` -> CRITICAL, ``high_priority`` -> HIGH, ``low_priority`` -> LOW. An explicit
``severity`` in the context wins over all three.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coordinator_plugins.error_handling.intake.text import storable
from coordinator_plugins.error_handling.model import MAX_TARGETS, ErrorSeverity

PRIORITY_FLAGS = (
    ("critical", ErrorSeverity.CRITICAL),
    ("high_priority", ErrorSeverity.HIGH),
    ("low_priority", ErrorSeverity.LOW),
)
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0", "")
_WORKER_KEYS = ("worker_id", "worker_ids")
_TASK_KEYS = ("task_id", "task_ids")


def related_mapping(related: Any, key: str = "related_entities") -> dict[str, Any]:
    """``related_entities`` as a dict: a mapping as is, an object by its public attributes.
    None is empty; anything else (a string, a number, a list) is a ValueError naming the key."""
    if related is None:
        return {}
    if isinstance(related, Mapping):
        return {str(k): v for k, v in related.items()}
    if isinstance(related, str | bytes | int | float | bool | list | tuple | set):
        raise ValueError(f"context.{key}: expected a dict of entity ids, got {type(related).__name__}")
    attrs = getattr(related, "__dict__", None)
    if not isinstance(attrs, dict):
        raise ValueError(f"context.{key}: expected a dict of entity ids, got {type(related).__name__}")
    return {k: v for k, v in attrs.items() if not k.startswith("_")}


def _ids(value: Any) -> list[str]:
    """One id or several: strings and numbers, alone or in a list, tuple or set; empties dropped."""
    items = value if isinstance(value, list | tuple | set | frozenset) else [value]
    out: list[str] = []
    for item in items:
        if item is None or isinstance(item, bool) or not isinstance(item, str | int):
            continue
        text = str(item).strip()
        if text and text not in out and len(out) < MAX_TARGETS:
            out.append(text)
    return out


def related_targets(related: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(worker ids, task ids) that a ``related_entities`` mapping names, in order, deduplicated."""
    workers: list[str] = []
    tasks: list[str] = []
    for keys, out in ((_WORKER_KEYS, workers), (_TASK_KEYS, tasks)):
        for k in keys:
            for i in _ids(related.get(k)):
                if i not in out and len(out) < MAX_TARGETS:
                    out.append(i)
    return workers, tasks


def _flag(ctx: Mapping[str, Any], key: str) -> bool:
    value = ctx.get(key)
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"context.{key}: expected true or false, got {value!r}")


def priority_severity(ctx: Mapping[str, Any]) -> ErrorSeverity | None:
    """The severity the seed's priority flags set, or None when none is on."""
    if "critical" not in ctx and "high_priority" not in ctx and "low_priority" not in ctx:
        return None  # the common case, on every report: three dict lookups
    on = [severity for key, severity in PRIORITY_FLAGS if _flag(ctx, key)]  # every flag is checked
    return on[0] if on else None


_CONTEXT_STR_KEYS = ("component", "operation", "worker_id", "task_id", "hardware_id", "request_id", "user_id")
_CONTEXT_STR_KEYSET = frozenset(_CONTEXT_STR_KEYS)
_NO_STRINGS: dict[str, str | None] = dict.fromkeys(_CONTEXT_STR_KEYS)


def context_strings(ctx: Mapping[str, Any]) -> dict[str, str | None]:
    """The context's strings by key (None when absent or None), each made storable."""
    if type(ctx) is dict:
        # A plain dict whose values of these keys are strings (the common case): only the keys
        # it has are read, in its own order, which is the same result (str() of a str does
        # nothing); any other value takes the loop below, in the keys' order.
        vals = dict(_NO_STRINGS)
        for k, v in ctx.items():
            if k in _CONTEXT_STR_KEYSET and v is not None:
                if type(v) is not str:
                    break
                vals[k] = v if v.isascii() else storable(v)
        else:
            return vals
    get = ctx.get
    vals = {}
    for k in _CONTEXT_STR_KEYS:
        if get(k) is None:
            vals[k] = None
        else:
            text = str(ctx[k])
            vals[k] = text if text.isascii() else storable(text)
    return vals
