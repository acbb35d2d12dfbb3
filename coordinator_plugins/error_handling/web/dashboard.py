"""The HTML dashboard: a page and its scripts shipped in the package (no network needed), which
read the plugin's API from the browser."""

from __future__ import annotations

import html
import json
from functools import cache
from importlib.resources import files

from coordinator_plugins.error_handling.config import ErrorHandlingConfig

ASSETS = {
    "dashboard.js": "application/javascript",
    "group.js": "application/javascript",
    "charts.js": "application/javascript",
    "dashboard.css": "text/css",
}


@cache
def asset(name: str) -> str:
    return (files("coordinator_plugins.error_handling.web") / "static" / name).read_text("utf-8")


def render_page(cfg: ErrorHandlingConfig) -> str:
    """The dashboard's HTML, with where its API and assets are and whether reads need the token."""
    assets = f"{cfg.dashboard_path}/assets"
    page_config = {
        "api": cfg.api_prefix,
        "assets": assets,
        "page": cfg.dashboard_path,
        "protectReads": bool(cfg.protect_reads and cfg.api_token),
        "tokenForPosts": bool(cfg.api_token),
        "metrics": "/metrics" if cfg.metrics else None,
    }
    text = json.dumps(page_config).replace("<", "\\u003c")
    return asset("dashboard.html").replace("__CONFIG__", text).replace("__ASSETS__", html.escape(assets))
