"""The HTML dashboard: a static page shipped in the package that polls the plugin's API."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files


@cache
def _template() -> str:
    return (files("coordinator_plugins.error_handling.web") / "static" / "dashboard.html").read_text("utf-8")


def render(api_prefix: str, protect_reads: bool = False) -> str:
    """The page for an API under ``api_prefix``; with ``protect_reads`` it asks for the token."""
    return (
        _template()
        .replace("__API_PREFIX__", json.dumps(api_prefix))
        .replace("__PROTECT_READS__", json.dumps(protect_reads))
    )
