"""Request validation of the reference coordinator's routes: what the OpenAPI document of
:mod:`.openapi` describes, exactly; anything else is a JSON 400 naming the field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from coordinator_plugins.httpio import bad
from coordinator_plugins.reference.openapi import ID_PATTERN, MAX_ARG, MAX_ARGS, OUTCOMES
from coordinator_plugins.reference.security import CommandPolicy

_ID = re.compile(ID_PATTERN)
_NUL = "\x00"


def kind_of(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _present(body: Mapping[str, Any], key: str, required: bool) -> bool:
    if key in body:
        return True
    if required:
        raise bad(f"{key}: required", "missing_field")
    return False


def id_field(body: Mapping[str, Any], key: str, required: bool = False) -> str | None:
    if not _present(body, key, required):
        return None
    value = body[key]
    if not isinstance(value, str) or not 1 <= len(value) <= 200 or not _ID.fullmatch(value):
        shown = f"{kind_of(value)} {str(value)[:80]!r}"
        raise bad(f"{key}: expected 1 to 200 of the characters A-Z a-z 0-9 . _ : @ -, got {shown}")
    return value


def int_field(body: Mapping[str, Any], key: str, lo: int, hi: int, default: Any = None, required: bool = False) -> Any:
    if not _present(body, key, required):
        return default
    value = body[key]
    if isinstance(value, float) and value.is_integer():  # JSON Schema: 2.0 is an integer
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise bad(f"{key}: expected an integer from {lo} to {hi}, got {kind_of(value)}")
    return value


def number_field(body: Mapping[str, Any], key: str, lo: float, hi: float, exclusive_lo: bool = False) -> float | None:
    if key not in body:
        return None
    value = body[key]
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value <= hi
    if not ok or (value <= lo if exclusive_lo else value < lo):
        low = f"over {lo:g} and up to" if exclusive_lo else f"from {lo:g} to"
        raise bad(f"{key}: expected a number {low} {hi:g}, got {kind_of(value)}")
    return float(value)


def choice_field(body: Mapping[str, Any], key: str, values: tuple[str, ...], required: bool = False) -> str | None:
    if not _present(body, key, required):
        return None
    value = body[key]
    if value not in values or not isinstance(value, str):
        raise bad(f"{key}: expected one of {', '.join(values)}, got {str(value)[:80]!r}", "invalid_enum")
    return value


def str_field(body: Mapping[str, Any], key: str, max_len: int) -> str | None:
    if key not in body:
        return None
    value = body[key]
    if not isinstance(value, str) or len(value) > max_len:
        raise bad(f"{key}: expected a string of at most {max_len} characters, got {kind_of(value)}")
    return value


def object_field(body: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key, {})
    if not isinstance(value, dict):
        raise bad(f"{key}: expected an object, got {kind_of(value)}")
    return value


def check_task_spec(spec: Mapping[str, Any], policy: CommandPolicy) -> None:
    """A task spec as the OpenAPI document describes it (``task_spec_schema``), or a 400."""
    if spec.get("kind") == "command" and policy.allowed == ():
        raise policy.forbidden()
    kind = choice_field(spec, "kind", ("sim", "command")) or "sim"
    number_field(spec, "duration", 0, 3600)
    choice_field(spec, "outcome", OUTCOMES)
    str_field(spec, "message", 2000)
    number_field(spec, "timeout", 0, 86400, exclusive_lo=True)
    if policy.allowed != () and "argv" in spec:
        argv = spec["argv"]
        if (
            not isinstance(argv, list)
            or not 1 <= len(argv) <= MAX_ARGS
            or not all(isinstance(a, str) and len(a) <= MAX_ARG and _NUL not in a for a in argv)
            or not argv[0]
        ):
            raise bad(
                f"argv: expected 1 to {MAX_ARGS} strings of at most {MAX_ARG} characters without NUL, "
                "the first not empty (the program; it runs without a shell)"
            )
        refusal = policy.refusal(argv[0])
        if refusal:
            raise bad(refusal, "command_not_allowed")
    if kind == "command" and "argv" not in spec:
        raise bad("argv: required for a command task", "missing_field")
