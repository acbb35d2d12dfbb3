"""The reference coordinator's config: its ``[coordinator]`` table checked, and one security for
the farm shared with the error-handling plugin's table."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from coordinator_plugins.error_handling.config import Rule, check_table, number, suggest, text
from coordinator_plugins.guard import allowed_hosts
from coordinator_plugins.httpio import token_problem
from coordinator_plugins.reference.security import SECURITY_KEYS, SecuritySettings, security_from_config

logger = logging.getLogger(__name__)


@dataclass
class CoordinatorSettings:
    host: str = "127.0.0.1"
    """Where the coordinator listens."""
    port: int = 8080
    """Its TCP port; 0 = any free port."""
    database: str = ":memory:"
    """Its own task state: a DuckDB file, ":memory:", or a postgresql:// URL (a fleet member)."""
    heartbeat_interval: float = 1.0
    """Seconds between a worker's heartbeats."""
    heartbeat_timeout: float = 5.0
    """Seconds of silence after which a worker is lost and its tasks go back to pending."""
    scheduler_interval: float = 0.5
    """The scheduler's tick in seconds when nothing wakes it."""
    max_concurrency: int = 0
    """Tasks running at once in the farm; 0 = unlimited."""
    watchdog_repeat: float = 10.0
    """Seconds after which a loop still down is reported again."""
    workers: int = 0
    """Worker processes it launches at start."""
    worker_max_tasks: int = 1
    """Tasks each launched worker runs at once, and the most any worker is given."""
    max_local_workers: int | None = None
    """Worker processes running here at once (its own and replacements); none = max(workers, 8)."""
    replaceable_workers: tuple[str, ...] = ()
    """Patterns (* ? [...]) of ids of workers it did not launch that recovery may replace."""
    keepalive_timeout: float = 15.0
    """serve: seconds a connection may wait for the head of its next request."""
    max_connections: int | None = None
    """serve: connections open at once; none = 1000, or fewer under a low open-file limit."""
    coordinator_id: str = ""
    """This member's name in a fleet; empty = host name and pid. The plugin's coordinator_id defaults to it."""
    lease_ttl: float = 15.0
    """A fleet member silent this long is dead: a survivor takes its tasks. The plugin's lease_ttl defaults to it."""

    def may_replace(self, worker_id: str) -> bool:
        """Whether the operator marked ``worker_id`` replaceable (``replaceable_workers``)."""
        return any(fnmatch.fnmatchcase(worker_id, p) for p in self.replaceable_workers)

    @property
    def local_worker_limit(self) -> int:
        return self.max_local_workers if self.max_local_workers is not None else max(self.workers, 8)

    @property
    def fleet(self) -> bool:
        """Whether the state lives in PostgreSQL, shared with the other members of a fleet."""
        return self.database.startswith(("postgresql://", "postgres://"))


def _patterns(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(p, str) and p and "\x00" not in p and len(p) <= 200 for p in value
    ):
        raise ValueError(
            "coordinator.replaceable_workers: expected a list of worker id patterns (shell-style: * ? [...]), "
            f"e.g. [\"gpu-*\"], got {value!r}"
        )
    return tuple(dict.fromkeys(value))


# What each [coordinator] key accepts, checked by the same rules as the plugin's own table.
_SETTING_RULES: dict[str, Rule] = {
    key: meta["rule"]
    for key, meta in {
        "host": text("a host name or IP address", nonempty=True),
        "port": number(0, 65535, integer=True),
        "database": text('a DuckDB file path, ":memory:" or a postgresql:// URL (a fleet)', nonempty=True),
        "heartbeat_interval": number(0.05, 3600),
        "heartbeat_timeout": number(0.1, 86400),
        "scheduler_interval": number(0.01, 3600),
        "max_concurrency": number(0, 1_000_000, integer=True),
        "watchdog_repeat": number(0.1, 86400),
        "workers": number(0, 1000, integer=True),
        "worker_max_tasks": number(1, 1000, integer=True),
        "max_local_workers": number(0, 1000, integer=True),
        "keepalive_timeout": number(0.5, 3600),
        "max_connections": number(1, 1_000_000, integer=True),
        "coordinator_id": text("a non-empty string", nonempty=True),
        "lease_ttl": number(1, 3600),
    }.items()
}
_SETTING_RULES["replaceable_workers"] = Rule("a list of worker id patterns", _patterns)
# The security keys are checked by security_from_config; here they are only known (with what they accept).
_SECURITY_ACCEPTS = {
    "api_token": '"" (no token) or printable ASCII without spaces, at most 4096 characters',
    "allow_unauthenticated": "true or false",
    "allowed_commands": "a list of program names (no /) or absolute paths",
    "protect_reads": "true or false",
    "body_timeout": "a number from 0.01 to 3600",
    "allowed_hosts": 'a list of host names, ".domain" suffixes or addresses, or ["*"]',
}
_SECURITY_RULES: dict[str, Rule] = {key: Rule(_SECURITY_ACCEPTS[key], lambda v: v) for key in SECURITY_KEYS}
_TABLES = ("coordinator", "plugins")


def settings_from_config(config: Mapping[str, Any]) -> CoordinatorSettings:
    """The ``[coordinator]`` table, checked: one ValueError listing every problem, a line each,
    naming the key, what it accepts and what it got (with a suggestion for a misspelt key)."""
    problems = [
        f"{key}: unknown config table; accepted: {', '.join(_TABLES)}{suggest(str(key), _TABLES)}"
        for key in config
        if key not in _TABLES
    ]
    table = config.get("coordinator", {})
    values: dict[str, Any] = {}
    bad_keys: set[Any] = set()
    if not isinstance(table, Mapping):
        problems.append(f"coordinator: expected a table, got {table!r}")
    else:
        values, bad = check_table("coordinator", table, _SETTING_RULES | _SECURITY_RULES)
        problems += bad
        bad_keys = set(table) - set(values)
        for key in SECURITY_KEYS:  # checked by security_from_config
            values.pop(key, None)
    # the rules between keys, whenever the keys they compare are valid (issue 28.6: all at once)
    settings = CoordinatorSettings(**values)
    if not bad_keys & {"heartbeat_timeout", "heartbeat_interval"} and (
            settings.heartbeat_timeout <= settings.heartbeat_interval):
        problems.append(
            f"coordinator.heartbeat_timeout: must be greater than heartbeat_interval "
            f"({settings.heartbeat_interval:g}), got {settings.heartbeat_timeout:g}"
        )
    if not bad_keys & {"max_local_workers", "workers"} and (
            settings.max_local_workers is not None and settings.max_local_workers < settings.workers):
        problems.append(
            f"coordinator.max_local_workers: must be at least workers ({settings.workers}), "
            f"got {settings.max_local_workers}"
        )
    if problems:
        raise ValueError("\n".join(problems))
    return settings


def _plugin_table(config: Mapping[str, Any]) -> Mapping[str, Any] | None:
    plugins = config.get("plugins")
    if not isinstance(plugins, Mapping) or "error_handling" not in (plugins.get("enabled") or []):
        return None
    table = plugins.get("error_handling", {})
    return table if isinstance(table, Mapping) else None  # (load_plugins says what is wrong with it)


def _usable(key: str, value: Any) -> bool:
    """Whether the plugin's ``key`` may be adopted (a bad one is left to the plugin to refuse, by its name)."""
    if key == "api_token":
        return bool(value) and token_problem(value) is None
    try:
        allowed_hosts(value, key)
    except ValueError:
        return False
    return True


def farm_security(config: Mapping[str, Any]) -> SecuritySettings:
    """The ``[coordinator]`` security keys (see :func:`security_from_config`), one for the farm:
    where the coordinator's table leaves ``api_token``, ``protect_reads`` or ``allowed_hosts``
    unset and the error-handling plugin's table sets them, the coordinator adopts the plugin's
    (a token set for the plugin alone used to leave the coordinator's routes open). A plugin
    that protects its reads protects the coordinator's too."""
    coord = config.get("coordinator", {})
    coord = coord if isinstance(coord, Mapping) else {}
    table = _plugin_table(config) or {}
    adopted = {
        key: table[key]
        for key in ("api_token", "allowed_hosts")
        if key in table and key not in coord and _usable(key, table[key])
    }
    security = security_from_config({**coord, **adopted})
    if table.get("protect_reads") is True and security.api_token and not security.protect_reads:
        security = replace(security, protect_reads=True)
        adopted["protect_reads"] = True
    if adopted:
        logger.info("[coordinator] takes %s from [plugins.error_handling]", ", ".join(sorted(adopted)))
    return security


def plugin_defaults(config: Mapping[str, Any], security: SecuritySettings, host: str) -> Mapping[str, Any]:
    """``config`` with the error-handling plugin's ``api_token``, ``protect_reads`` and
    ``allowed_hosts`` defaulting to the coordinator's (SPEC 4; the coordinator's host is one of
    the plugin's allowed hosts); the caller's mapping is not changed."""
    table = _plugin_table(config)
    if table is None:
        return config
    table = dict(table)
    if security.api_token and not table.get("api_token"):
        table["api_token"] = security.api_token
    if security.protect_reads:
        table.setdefault("protect_reads", True)
    if "allowed_hosts" not in table:
        named = [host] if host not in ("0.0.0.0", "::") and _usable("allowed_hosts", [host]) else []
        table["allowed_hosts"] = [*security.allowed_hosts, *named]
    coord = config.get("coordinator")
    if isinstance(coord, Mapping):  # one name and one lease time per fleet member
        for key in ("coordinator_id", "lease_ttl"):
            if key in coord:
                table.setdefault(key, coord[key])
    plugins = config["plugins"]
    return {**config, "plugins": {**plugins, "error_handling": table}}
