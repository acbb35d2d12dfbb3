"""Plugin discovery (entry-point group ``coordinator_plugins``) and loading from config."""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)

PLUGIN_GROUP = "coordinator_plugins"

# Plugins of this package, used when the package runs from a source tree that was never
# installed (so its entry points are not registered). Installed entry points take precedence.
_BUILTIN = {"error_handling": "coordinator_plugins.error_handling:setup"}


def _load_target(target: str) -> Any:
    import importlib

    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def available_plugins() -> dict[str, Callable[..., Any]]:
    """Every plugin that can be enabled, by name: installed entry points plus the built-ins."""
    found: dict[str, Callable[..., Any]] = {}
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            found[ep.name] = ep.load()
        except Exception:  # a broken third-party plugin must not hide the others
            logger.exception("plugin entry point %r could not be loaded", ep.name)
    for name, target in _BUILTIN.items():
        found.setdefault(name, _load_target(target))
    return found


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file. A syntax error becomes a ValueError naming the file."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{p}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise ValueError(f"{p}: cannot read config: {exc.strerror}") from exc


def check_plugins(config: Mapping[str, Any]) -> tuple[list[tuple[str, Callable[..., Any], Any]], list[str]]:
    """The plugins ``config["plugins"]`` enables, each with its checked table, and every problem
    of the ``[plugins]`` tables, a line each (all at once: the list, the names, each plugin's own
    table). Nothing is installed."""
    plugins_cfg = config.get("plugins", {})
    if not isinstance(plugins_cfg, Mapping):
        return [], ["plugins: expected a table"]
    problems: list[str] = []
    enabled = plugins_cfg.get("enabled", [])
    if not isinstance(enabled, list) or not all(isinstance(n, str) for n in enabled):
        problems.append("plugins.enabled: expected a list of plugin names")
        enabled = []
    elif len(set(enabled)) != len(enabled):
        problems.append("plugins.enabled: a plugin is named twice")
    known = available_plugins()
    accepted = ", ".join(sorted(known))
    for key in plugins_cfg:
        if key != "enabled" and key not in known:
            problems.append(f"plugins.{key}: unknown plugin table; accepted: {accepted}")
    prepared: list[tuple[str, Callable[..., Any], Any]] = []
    for name in dict.fromkeys(enabled):
        if name not in known:
            problems.append(f"plugins.enabled: unknown plugin {name!r}; accepted: {accepted}")
            continue
        plugin = known[name]
        table = plugins_cfg.get(name, {})
        if not isinstance(table, Mapping):
            problems.append(f"plugins.{name}: expected a table")
            continue
        validate = getattr(plugin, "validate_config", None)
        try:
            checked = validate(table) if callable(validate) else dict(table)
        except ValueError as exc:  # every problem of its table, a line each
            problems += str(exc).splitlines()
            continue
        prepared.append((name, plugin, checked))
    return prepared, problems


def load_plugins(app: web.Application, coordinator: Any, config: Mapping[str, Any]) -> dict[str, object]:
    """Enable every plugin named in ``config["plugins"]["enabled"]``; return handles by name.

    Every plugin's config is validated before any plugin is installed, so a bad value leaves
    the app untouched; the ValueError lists every problem, a line each.
    """
    prepared, problems = check_plugins(config)
    if problems:
        raise ValueError("\n".join(problems))
    handles: dict[str, object] = {}
    for name, plugin, checked in prepared:
        handles[name] = plugin(app, coordinator, checked)
        logger.info("plugin %s enabled", name)
    return handles
