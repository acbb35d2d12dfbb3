"""The ``[plugins.error_handling]`` config table: defaults, types, ranges, and validation.

Each field of :class:`ErrorHandlingConfig` carries its rule in its metadata (what it accepts and
how a raw value becomes the setting), so a table from a file and a config built in code are
checked by the same code. Every bad key is reported at once, each line naming the key, what it
accepts and what it got; a near-miss of a key's name gets a suggestion.
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from coordinator_plugins.guard import allowed_hosts
from coordinator_plugins.httpio import TOKEN_ENV, token_problem

PREFIX = "plugins.error_handling"
BUILTIN_STRATEGY_IDS = ("retry", "worker", "database", "coordinator", "system")
SELECTIONS = ("adaptive", "score", "ladder")


class _Bad(Exception):
    """A value a rule refuses; ``accepted`` overrides the rule's own description."""

    def __init__(self, accepted: str | None = None, message: str | None = None) -> None:
        super().__init__(message or accepted or "")
        self.accepted = accepted
        self.message = message


@dataclass(frozen=True, slots=True)
class Rule:
    """What a key accepts (for the message) and how a raw value becomes the setting."""

    accepted: str
    convert: Callable[[Any], Any]


def _rule(accepted: str, convert: Callable[[Any], Any]) -> dict[str, Rule]:
    return {"rule": Rule(accepted, convert)}


def number(lo: float, hi: float = math.inf, integer: bool = False, optional: bool = False) -> dict[str, Rule]:
    kind = "an integer" if integer else "a number"

    def convert(value: Any) -> Any:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            raise _Bad()
        if isinstance(value, float) and not math.isfinite(value):
            raise _Bad()
        if not lo <= value <= hi:
            raise _Bad()
        return value if integer else float(value)

    return _rule(f"{kind} from {lo} to {hi}", convert)


def boolean() -> dict[str, Rule]:
    def convert(value: Any) -> bool:
        if not isinstance(value, bool):
            raise _Bad()
        return value

    return _rule("true or false", convert)


def text(accepted: str = "a string", nonempty: bool = False) -> dict[str, Rule]:
    def convert(value: Any) -> str:
        if not isinstance(value, str) or (nonempty and not value) or "\x00" in value:
            raise _Bad()
        return value

    return _rule(accepted, convert)


def bearer_token() -> dict[str, Rule]:
    def convert(value: Any) -> str:
        problem = token_problem(value)
        if problem:  # never echo the value: it is meant to be a secret
            raise _Bad(message=f"{PREFIX}.api_token: {problem} (the value is not shown)")
        return str(value)

    return _rule('"" (no token) or printable ASCII without spaces, at most 4096 characters', convert)


def url_path(allow_empty: bool) -> dict[str, Rule]:
    def convert(value: Any) -> str:
        if not isinstance(value, str) or "\x00" in value:
            raise _Bad()
        if not value:
            if allow_empty:
                return value
            raise _Bad('a non-empty path such as "/api"')
        if not value.startswith("/") or value.endswith("/"):
            raise _Bad()
        return value

    return _rule('a path starting with "/" and not ending with "/"', convert)


def choice(values: tuple[str, ...]) -> dict[str, Rule]:
    def convert(value: Any) -> str:
        if value not in values:
            raise _Bad()
        return str(value)

    return _rule(f"one of {', '.join(values)}", convert)


def subset(values: tuple[str, ...]) -> dict[str, Rule]:
    def convert(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v in values for v in value):
            raise _Bad()
        return tuple(dict.fromkeys(value))

    return _rule(f"a list drawn from {', '.join(values)}", convert)


def _default_coordinator_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _hooks_rule() -> dict[str, Rule]:
    return _rule('a table of key -> list of "module:function"', lambda v: _check_hooks(v))


def _strategies_rule() -> dict[str, Rule]:
    return _rule('a table of id -> "module:Class"', lambda v: _check_strategies(v))


@dataclass(frozen=True, slots=True)
class ErrorHandlingConfig:
    """Validated settings of the error-handling plugin (see SPEC section 4).

    Built in code, it is checked like a table from a file: pass it through
    :func:`validate_config` (``setup`` does)."""

    database: str = field(default="error_handling.duckdb",
                          metadata=text('a file path, ":memory:" or a postgresql:// URL', nonempty=True))
    """DuckDB file, ":memory:", or postgresql://user@host:port/dbname (the shared store of a fleet)"""
    api_prefix: str = field(default="/api", metadata=url_path(allow_empty=False))
    """Where the HTTP routes are mounted on the coordinator's router."""
    api_token: str = field(default="", metadata=bearer_token())
    """When set, every POST needs Authorization: Bearer <token>; unset, COORDINATOR_PLUGINS_API_TOKEN sets it."""
    auto_recover: bool = field(default=True, metadata=boolean())
    """Reported errors start recovery in the background."""
    selection: str = field(default="adaptive", metadata=choice(SELECTIONS))
    """How a strategy is chosen: adaptive (learned), score (the seed's greedy score), ladder (fixed order)."""
    builtin_strategies: tuple[str, ...] = field(default=BUILTIN_STRATEGY_IDS, metadata=subset(BUILTIN_STRATEGY_IDS))
    """Which of the built-in strategies are registered."""
    max_recovery_level: int = field(default=5, metadata=number(1, 5, integer=True))
    """The highest of the five recovery levels escalation may reach."""
    escalation_backoff: float = field(default=1.0, metadata=number(0, 86_400))
    """Seconds between levels (doubling, capped); also the cooldown after a failed recovery."""
    escalation_backoff_max: float = field(default=60.0, metadata=number(0, 86_400))
    """The cap of escalation_backoff's doubling, in seconds."""
    default_timeout: float = field(default=30.0, metadata=number(0.01, 86_400))
    """A strategy's timeout in seconds before anything is learned."""
    regression_window: float = field(default=600.0, metadata=number(0, 10 * 365 * 86_400))
    """Seconds in which a resolved group that recurs reopens as a regression."""
    recovery_budget: int = field(default=10, metadata=number(0, 1_000_000, integer=True))
    """Runs per component per budget_window at level 3+ or of a strategy above LOW (any restart); 0 = no limit."""
    budget_window: float = field(default=60.0, metadata=number(0.001, 86_400))
    """The sliding window, in seconds, of recovery_budget and max_recoveries_per_group."""
    hook_timeout: float = field(default=5.0, metadata=number(0.001, 3_600))
    """Seconds after which a hook still running is abandoned and counted."""
    expose_stack_traces: bool = field(default=False, metadata=boolean())
    """GET /errors/{id} includes stack traces."""
    metrics: bool = field(default=True, metadata=boolean())
    """Prometheus metrics at /metrics."""
    dashboard_path: str = field(default="/dashboard/errors", metadata=url_path(allow_empty=True))
    """Where the HTML dashboard is served; "" turns it off."""
    hooks: Mapping[str, tuple[str, ...]] = field(default_factory=dict, metadata=_hooks_rule())
    """Hooks registered at setup: hook key -> list of "module:function"."""
    strategies: Mapping[str, str] = field(default_factory=dict, metadata=_strategies_rule())
    """Strategies registered at setup: id -> "module:Class", constructed as Class(coordinator)."""
    seed: int | None = field(default=None, metadata=number(-(2**63), 2**63 - 1, integer=True, optional=True))
    """Seeds every selection and jitter choice (error ids stay random); none = unseeded."""
    # SPEC section 4, recovery that holds (section 9), security (8) and fleets (10).
    verify_window: float = field(default=30.0, metadata=number(0, 86_400))
    """Seconds a group must stay quiet before a recovery counts as a success; 0 = at once."""
    max_recoveries_per_group: int = field(default=5, metadata=number(0, 1_000_000, integer=True))
    """Recoveries per target (worker, else task, else component), held or not, per budget_window; 0 = unlimited."""
    protect_reads: bool = field(default=False, metadata=boolean())
    """With a token, every GET route, /metrics and the dashboard need it too."""
    allowed_hosts: tuple[str, ...] = field(
        default=(), metadata=_rule('a list of host names or addresses, or ["*"]',
                                   lambda v: allowed_hosts(v, f"{PREFIX}.allowed_hosts"))
    )
    """More Host names the routes answer to than loopback's and the address reached; other hosts get a 421."""
    coordinator_id: str = field(
        default_factory=_default_coordinator_id, metadata=text("a non-empty string", nonempty=True)
    )
    """This coordinator's name in a fleet (default: host name and pid)."""
    lease_ttl: float = field(default=15.0, metadata=number(1, 3_600))
    """Seconds of silence after which a fleet member is dead and a survivor takes over its work."""
    # Extensions beyond SPEC section 4 (documented in docs/configuration.md).
    recovery_budget_global: int = field(default=0, metadata=number(0, 1_000_000, integer=True))
    """Budgeted actions per budget_window over all components; 0 = 3 x recovery_budget."""
    level_reset_after: float = field(default=3600.0, metadata=number(0, 10 * 365 * 86_400))
    """Seconds of quiet after which a group's recovery level returns to 1."""
    max_groups_in_memory: int = field(default=50_000, metadata=number(100, 10_000_000, integer=True))
    """Groups kept in memory; resolved ones are evicted first, the database keeps them all."""
    retention_days: int = field(default=30, metadata=number(1, 36_500, integer=True))
    """Occurrence and performance rows older than this many days are deleted."""
    write_queue_limit: int = field(default=200_000, metadata=number(1_000, 100_000_000, integer=True))
    """Occurrences waiting for the disk; beyond it rows are dropped and counted, group counts kept."""
    commit_window: float = field(default=0.0, metadata=number(0, 0.1))
    """Extra seconds the writer waits during a burst for fewer, larger commits; 0 = commit at once."""
    thread_switch_interval: float = field(default=0.001, metadata=number(0, 0.1))
    """sys.setswitchinterval while the plugin runs, when the host left the default; 0 = untouched."""
    fallback_to_memory: bool = field(default=False, metadata=boolean())
    """A database locked by another process: false = an error, true = run in memory (degraded)."""
    database_memory_mb: int = field(default=64, metadata=number(16, 1_000_000, integer=True))
    """DuckDB's memory limit in megabytes inside the coordinator's process; it spills to disk beyond it."""
    max_metadata_bytes: int = field(default=16_384, metadata=number(1_024, 1_048_576, integer=True))
    """A report's stored metadata (its JSON) at most; past it, the entries that fit, and metadata_truncated."""
    body_timeout: float = field(default=10.0, metadata=number(0.01, 3_600))
    """Seconds a request body may take to arrive; later it is answered 408 and its connection closed."""
    idempotency_ttl: float = field(default=86_400.0, metadata=number(60, 365 * 86_400))
    """Seconds an idempotency key and the answer its report got are kept; a later retry is a new report."""
    durable_timeout: float = field(default=30.0, metadata=number(0.01, 3_600))
    """Seconds POST /errors waits for its commit before it answers 503 (may_be_stored: true)."""
    handle_error_wait: float = field(default=30.0, metadata=number(0, 86_400))
    """Seconds handle_error waits; then it returns in_progress while the recovery goes on; 0 = until it ends."""


KEYS: tuple[str, ...] = tuple(f.name for f in fields(ErrorHandlingConfig))


def _line(key: str, accepted: str, value: Any, prefix: str = PREFIX) -> str:
    return f"{prefix}.{key}: expected {accepted}, got {value!r}"


def _err(key: str, accepted: str, value: Any) -> ValueError:
    return ValueError(_line(key, accepted, value))


def suggest(name: str, candidates: tuple[str, ...] | list[str]) -> str:
    """``"; did you mean 'x'?"`` for a near-miss of one of ``candidates``, else ``""``."""
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


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


def rules_of(cls: type) -> dict[str, Rule]:
    """The rule of each field of a dataclass whose fields carry one in their metadata."""
    return {f.name: f.metadata["rule"] for f in fields(cls)}


def check_table(prefix: str, raw: Mapping[Any, Any], rules: Mapping[str, Rule]) -> tuple[dict[str, Any], list[str]]:
    """Convert each value of ``raw`` by its key's rule.

    Returns the converted values and every problem, a line each, naming ``prefix.key``, what it
    accepts and what it got; an unknown key lists the accepted ones, with a suggestion for a
    near-miss. Used for the plugin's table and for the reference coordinator's."""
    problems: list[str] = []
    out: dict[str, Any] = {}
    known = tuple(rules)
    for key, value in raw.items():
        if not isinstance(key, str) or key not in rules:
            problems.append(
                f"{prefix}.{key}: unknown key; accepted: {', '.join(sorted(known))}{suggest(str(key), known)}"
            )
            continue
        rule = rules[key]
        try:
            out[key] = rule.convert(value)
        except _Bad as bad:
            problems.append(bad.message or _line(key, bad.accepted or rule.accepted, value, prefix))
        except ValueError as exc:  # nested checks (hooks, strategies) name their own key
            problems.append(str(exc))
    return out, problems


_RULES: dict[str, Rule] = rules_of(ErrorHandlingConfig)


def validate_config(table: Mapping[str, Any] | ErrorHandlingConfig | None) -> ErrorHandlingConfig:
    """Check a raw config table (or a config built in code) and return the validated settings.

    Raises one ValueError listing every problem, a line each. ``api_token`` comes from the
    environment variable ``COORDINATOR_PLUGINS_API_TOKEN`` when the table does not set it."""
    if isinstance(table, ErrorHandlingConfig):
        raw: dict[str, Any] = {f.name: getattr(table, f.name) for f in fields(ErrorHandlingConfig)}
        given = set(raw)
    elif table is None or isinstance(table, Mapping):
        raw = dict(table or {})
        given = set(raw)
    else:
        raise ValueError(f"{PREFIX}: expected a table, got {type(table).__name__}")
    out, problems = check_table(PREFIX, raw, _RULES)
    if "api_token" not in given and os.environ.get(TOKEN_ENV):
        env, env_problems = check_table(PREFIX, {"api_token": os.environ[TOKEN_ENV]}, _RULES)
        out.update(env)
        problems += [f"{line} (from the environment variable {TOKEN_ENV})" for line in env_problems]
    # the rules between keys, whenever the keys they compare are valid (all problems at once)
    bad = set(raw) - set(out)
    lo = out.get("escalation_backoff", 1.0)
    hi = out.get("escalation_backoff_max", 60.0)
    if not bad & {"escalation_backoff", "escalation_backoff_max"} and hi < lo:
        problems.append(_line("escalation_backoff_max", f"a number >= escalation_backoff ({lo})", hi))
    token_bad = any(line.startswith(f"{PREFIX}.api_token") for line in problems)
    if out.get("protect_reads") and not out.get("api_token") and not token_bad:
        problems.append(f"{PREFIX}.protect_reads: needs api_token (or {TOKEN_ENV}) to be set")
    if problems:
        raise ValueError("\n".join(problems))
    base = table if isinstance(table, ErrorHandlingConfig) else ErrorHandlingConfig()
    return replace(base, **out)


def _check_hooks(value: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, Mapping):
        raise _Bad()
    hooks: dict[str, tuple[str, ...]] = {}
    for hook_key, paths in value.items():
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list | tuple) or not all(isinstance(p, str) for p in paths):
            raise _err(f"hooks.{hook_key}", 'a list of "module:function"', paths)
        for path in paths:
            if not callable(resolve_dotted(f"hooks.{hook_key}", path)):
                raise _err(f"hooks.{hook_key}", "a callable", path)
        hooks[str(hook_key)] = tuple(paths)
    return hooks


def _check_strategies(value: Any) -> dict[str, str]:
    from coordinator_plugins.error_handling.strategies.base import RecoveryStrategy

    if not isinstance(value, Mapping):
        raise _Bad()
    out: dict[str, str] = {}
    for sid, path in value.items():
        if sid in BUILTIN_STRATEGY_IDS:
            raise ValueError(f"{PREFIX}.strategies.{sid}: {sid!r} is a built-in strategy id")
        cls = resolve_dotted(f"strategies.{sid}", path)
        if not (isinstance(cls, type) and issubclass(cls, RecoveryStrategy)):
            raise _err(f"strategies.{sid}", "a RecoveryStrategy subclass", path)
        out[str(sid)] = path
    return out
