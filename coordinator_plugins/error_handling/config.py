"""The ``[plugins.error_handling]`` config table: defaults, types, ranges, and validation."""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

PREFIX = "plugins.error_handling"
BUILTIN_STRATEGY_IDS = ("retry", "worker", "database", "coordinator", "system")
SELECTIONS = ("adaptive", "score", "ladder")


@dataclass(frozen=True, slots=True)
class ErrorHandlingConfig:
    """Validated settings of the error-handling plugin (see SPEC section 4)."""

    database: str = "error_handling.duckdb"
    api_prefix: str = "/api"
    api_token: str = ""
    auto_recover: bool = True
    selection: str = "adaptive"
    builtin_strategies: tuple[str, ...] = BUILTIN_STRATEGY_IDS
    max_recovery_level: int = 5
    escalation_backoff: float = 1.0
    escalation_backoff_max: float = 60.0
    default_timeout: float = 30.0
    regression_window: float = 600.0
    recovery_budget: int = 10
    budget_window: float = 60.0
    hook_timeout: float = 5.0
    expose_stack_traces: bool = False
    metrics: bool = True
    dashboard_path: str = "/dashboard/errors"
    hooks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    strategies: Mapping[str, str] = field(default_factory=dict)
    seed: int | None = None
    # Extensions beyond SPEC section 4 (documented in the README).
    recovery_budget_global: int = 0
    level_reset_after: float = 3600.0
    max_groups_in_memory: int = 50_000
    retention_days: int = 30
    write_queue_limit: int = 200_000
    commit_window: float = 0.001
    fallback_to_memory: bool = False
    database_memory_mb: int = 64


def _err(key: str, accepted: str, value: Any) -> ValueError:
    return ValueError(f"{PREFIX}.{key}: expected {accepted}, got {value!r}")


def _number(key: str, value: Any, lo: float, hi: float = math.inf, integer: bool = False) -> Any:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise _err(key, f"{kind} from {lo} to {hi}", value)
    if isinstance(value, float) and not math.isfinite(value):
        raise _err(key, f"{kind} from {lo} to {hi}", value)
    if not lo <= value <= hi:
        raise _err(key, f"{kind} from {lo} to {hi}", value)
    return value if integer else float(value)


def resolve_dotted(key: str, path: Any) -> Any:
    """Import ``"module:attr"`` (or ``"module.attr"``); ValueError naming the key otherwise."""
    if not isinstance(path, str) or not path:
        raise _err(key, 'a "module:attribute" path', path)
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise _err(key, 'a "module:attribute" path', path)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(f"{PREFIX}.{key}: cannot import module {module_name!r} of {path!r}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{PREFIX}.{key}: {path!r} does not resolve: no attribute {part!r}") from None
    return obj


def validate_config(table: Mapping[str, Any] | ErrorHandlingConfig | None) -> ErrorHandlingConfig:
    """Check a raw config table and return the validated settings."""
    if table is None:
        return ErrorHandlingConfig()
    if isinstance(table, ErrorHandlingConfig):
        return table
    if not isinstance(table, Mapping):
        raise ValueError(f"{PREFIX}: expected a table, got {type(table).__name__}")
    names = {f.name for f in fields(ErrorHandlingConfig)}
    for key in table:
        if key not in names:
            raise ValueError(f"{PREFIX}.{key}: unknown key; accepted: {', '.join(sorted(names))}")
    out: dict[str, Any] = {}
    for key, value in table.items():
        out[key] = _check(key, value)
    if "escalation_backoff_max" in out or "escalation_backoff" in out:
        lo = out.get("escalation_backoff", 1.0)
        hi = out.get("escalation_backoff_max", 60.0)
        if hi < lo:
            raise _err("escalation_backoff_max", f"a number >= escalation_backoff ({lo})", hi)
    return ErrorHandlingConfig(**out)


def _check(key: str, value: Any) -> Any:
    if key == "database":
        if not isinstance(value, str) or not value:
            raise _err(key, 'a file path or ":memory:"', value)
        return value
    if key in ("api_prefix", "dashboard_path"):
        if not isinstance(value, str) or (value and (not value.startswith("/") or value.endswith("/"))):
            raise _err(key, 'a path starting with "/" and not ending with "/"', value)
        if key == "api_prefix" and not value:
            raise _err(key, 'a non-empty path such as "/api"', value)
        return value
    if key == "api_token":
        if not isinstance(value, str):
            raise _err(key, "a string", value)
        return value
    if key in ("auto_recover", "expose_stack_traces", "metrics", "fallback_to_memory"):
        if not isinstance(value, bool):
            raise _err(key, "true or false", value)
        return value
    if key == "selection":
        if value not in SELECTIONS:
            raise _err(key, f"one of {', '.join(SELECTIONS)}", value)
        return value
    if key == "builtin_strategies":
        if not isinstance(value, list | tuple) or not all(v in BUILTIN_STRATEGY_IDS for v in value):
            raise _err(key, f"a list drawn from {', '.join(BUILTIN_STRATEGY_IDS)}", value)
        return tuple(dict.fromkeys(value))
    if key == "max_recovery_level":
        return _number(key, value, 1, 5, integer=True)
    if key in ("escalation_backoff", "escalation_backoff_max"):
        return _number(key, value, 0, 86_400)
    if key == "default_timeout":
        return _number(key, value, 0.01, 86_400)
    if key in ("regression_window", "level_reset_after"):
        return _number(key, value, 0, 10 * 365 * 86_400)
    if key in ("recovery_budget", "recovery_budget_global"):
        return _number(key, value, 0, 1_000_000, integer=True)
    if key == "budget_window":
        return _number(key, value, 0.001, 86_400)
    if key == "hook_timeout":
        return _number(key, value, 0.001, 3_600)
    if key == "max_groups_in_memory":
        return _number(key, value, 100, 10_000_000, integer=True)
    if key == "retention_days":
        return _number(key, value, 1, 36_500, integer=True)
    if key == "database_memory_mb":
        return _number(key, value, 16, 1_000_000, integer=True)
    if key == "commit_window":
        return _number(key, value, 0, 0.1)
    if key == "write_queue_limit":
        return _number(key, value, 1_000, 100_000_000, integer=True)
    if key == "seed":
        if value is None:
            return None
        return _number(key, value, -(2**63), 2**63 - 1, integer=True)
    if key == "hooks":
        return _check_hooks(value)
    if key == "strategies":
        return _check_strategies(value)
    raise AssertionError(key)  # pragma: no cover - names were checked by the caller


def _check_hooks(value: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, Mapping):
        raise _err("hooks", 'a table of key -> list of "module:function"', value)
    hooks: dict[str, tuple[str, ...]] = {}
    for hook_key, paths in value.items():
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise _err(f"hooks.{hook_key}", 'a list of "module:function"', paths)
        for path in paths:
            if not callable(resolve_dotted(f"hooks.{hook_key}", path)):
                raise _err(f"hooks.{hook_key}", "a callable", path)
        hooks[str(hook_key)] = tuple(paths)
    return hooks


def _check_strategies(value: Any) -> dict[str, str]:
    from coordinator_plugins.error_handling.strategies.base import RecoveryStrategy

    if not isinstance(value, Mapping):
        raise _err("strategies", 'a table of id -> "module:Class"', value)
    out: dict[str, str] = {}
    for sid, path in value.items():
        if sid in BUILTIN_STRATEGY_IDS:
            raise ValueError(f"{PREFIX}.strategies.{sid}: {sid!r} is a built-in strategy id")
        cls = resolve_dotted(f"strategies.{sid}", path)
        if not (isinstance(cls, type) and issubclass(cls, RecoveryStrategy)):
            raise _err(f"strategies.{sid}", "a RecoveryStrategy subclass", path)
        out[str(sid)] = path
    return out
