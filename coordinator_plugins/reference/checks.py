"""Every problem of a reference coordinator's config at once (issue 28.6): the ``[coordinator]``
table (its keys, the rules between them, its security keys), protected mode when it is about to
listen, and the ``[plugins]`` tables (the list, the names, each enabled plugin's own table), a line
each. ``serve --config`` prints them all and exits 2; ``build_app`` raises them as one ValueError."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from coordinator_plugins.plugins import check_plugins
from coordinator_plugins.reference.security import check_listen
from coordinator_plugins.reference.settings import farm_security, plugin_defaults, settings_from_config

T = TypeVar("T")


def _checked(problems: list[str], check: Callable[..., T], *args: Any) -> T | None:
    """``check(*args)``; its ValueError's lines added to ``problems`` (and None) instead of raised."""
    try:
        return check(*args)
    except ValueError as exc:
        problems += str(exc).splitlines()
        return None


def config_problems(config: Mapping[str, Any], listening: bool = False) -> list[str]:
    """Every problem of ``config``, a line each, in the order of the file (``[coordinator]``
    first); empty when it is good. ``listening``: include protected mode (``serve``)."""
    problems: list[str] = []
    settings = _checked(problems, settings_from_config, config)
    security = _checked(problems, farm_security, config)
    host = settings.host if settings is not None else _host(config)
    if listening and security is not None and host is not None:
        _checked(problems, check_listen, host, security)
    if security is not None:  # the plugin's token, hosts and reads default to the coordinator's
        config = plugin_defaults(config, security, host or "127.0.0.1")
    problems += check_plugins(config)[1]
    if settings is not None:
        problems += _shared_file(config, settings.database)
    return list(dict.fromkeys(problems))


def _shared_file(config: Mapping[str, Any], own: str) -> list[str]:
    """The plugin's DuckDB file may not be the coordinator's: one process opens a file once, with
    one configuration (a shared ``postgresql://`` database is a fleet's, and fine)."""
    plugins = config.get("plugins")
    table = plugins.get("error_handling") if isinstance(plugins, Mapping) else None
    theirs = table.get("database") if isinstance(table, Mapping) else None
    if not isinstance(theirs, str) or theirs != own or own == ":memory:" or "://" in own:
        return []
    return [f"plugins.error_handling.database: {theirs!r} is coordinator.database too; DuckDB opens a file "
            "once per process: give the plugin a file of its own (e.g. \"error_handling.duckdb\")"]


def _host(config: Mapping[str, Any]) -> str | None:
    """``[coordinator] host`` when the table has other problems: the default, or a usable string."""
    table = config.get("coordinator", {})
    host = table.get("host", "127.0.0.1") if isinstance(table, Mapping) else None
    return host if isinstance(host, str) and host and "\x00" not in host else None


def check_config(config: Mapping[str, Any]) -> None:
    """One ValueError listing every problem of ``config`` (see :func:`config_problems`)."""
    problems = config_problems(config)
    if problems:
        raise ValueError("\n".join(problems))
