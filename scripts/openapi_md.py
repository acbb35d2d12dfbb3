"""The HTTP reference of the documentation, drawn from the OpenAPI documents that the servers
serve: ``GET /api/openapi.json`` of the error-handling plugin set up on a bare aiohttp app, and
of the reference coordinator running without the plugin. Each server is started for real on an
ephemeral loopback port (with a token configured, so that the document declares where the token
is required) and asked for its document; ``markdown(document)`` renders it.

Used by ``scripts/docs_tables.py`` (the ``http-plugin`` and ``http-coordinator`` tables of
``docs/http-api.md``).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

TOKEN = "docs-reference-token"  # any token: it only makes the document declare where one is needed
METHODS = ("get", "post", "put", "patch", "delete")


async def _served(app: Any) -> dict[str, Any]:
    import aiohttp
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{port}/api/openapi.json", headers=headers) as answer:
            answer.raise_for_status()
            return dict(await answer.json())
    finally:
        await runner.cleanup()


async def _plugin_document() -> dict[str, Any]:
    from aiohttp import web

    from coordinator_plugins.error_handling import setup

    app = web.Application()
    setup(app, None, {"database": ":memory:", "api_token": TOKEN})
    return await _served(app)


async def _coordinator_document() -> dict[str, Any]:
    from coordinator_plugins.reference import build_app

    with tempfile.TemporaryDirectory() as tmp:
        app = build_app({"coordinator": {"database": str(Path(tmp) / "c.duckdb"), "api_token": TOKEN}})
        return await _served(app)


def plugin_document() -> dict[str, Any]:
    """The document the plugin serves at ``GET /api/openapi.json`` (default config, a token set)."""
    return asyncio.run(_plugin_document())


def coordinator_document() -> dict[str, Any]:
    """The document the reference coordinator serves without the plugin (a token set)."""
    return asyncio.run(_coordinator_document())


# -- rendering ----------------------------------------------------------------------------------------------
def _esc(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _type(schema: dict[str, Any]) -> str:
    """A JSON schema in a few words: its type, bounds, enum, pattern."""
    if not schema:
        return "any"
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    for combo in ("oneOf", "anyOf"):
        if combo in schema:
            return " or ".join(_type(s) for s in schema[combo])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array":
        kind = f"array of {_type(schema.get('items', {}))}"
    parts = [str(kind)]
    if "enum" in schema:
        parts.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is not None or hi is not None:
        parts.append(f"{'' if lo is None else lo}..{'' if hi is None else hi}")
    lo, hi = schema.get("minLength"), schema.get("maxLength")
    if lo is not None or hi is not None:
        parts.append(f"length {lo or 0}..{'' if hi is None else hi}")
    if "maxItems" in schema:
        parts.append(f"at most {schema['maxItems']} items")
    if "default" in schema:
        parts.append(f"default `{json.dumps(schema['default'])}`")
    if schema.get("description"):
        parts.append(str(schema["description"]))
    return _esc(", ".join(parts))


def _fields(schema: dict[str, Any]) -> list[str]:
    """The rows of an object schema's properties (name, required, type)."""
    props = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    return [f"| `{name}` | {'yes' if name in required else 'no'} | {_type(sub)} |" for name, sub in props.items()]


def _operation(path: str, method: str, op: dict[str, Any]) -> list[str]:
    out = [f"#### `{method.upper()} {path}`", ""]
    if op.get("summary"):
        out += [_esc(op["summary"]) + ".", ""]
    if op.get("description"):
        out += [op["description"], ""]
    needs = "the bearer token when one is configured" if op.get("security") else "no token"
    out += [f"Needs {needs}.", ""]
    params = op.get("parameters") or []
    if params:
        out += ["| parameter | in | required | accepts |", "|---|---|---|---|"]
        out += [f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} | "
                f"{_type(p.get('schema', {}))}{'; ' + _esc(p['description']) if p.get('description') else ''} |"
                for p in params]
        out.append("")
    body = op.get("requestBody")
    if body:
        schema = next(iter(body.get("content", {}).values()), {}).get("schema", {})
        rows = _fields(schema)
        if rows:
            out += ["| body field | required | accepts |", "|---|---|---|", *rows, ""]
        else:
            out += [f"Body: {_type(schema)}.", ""]
    out += ["| status | answer |", "|---|---|"]
    for code, answer in op.get("responses", {}).items():
        schema = next(iter(answer.get("content", {}).values()), {}).get("schema", {})
        keys = ", ".join(f"`{k}`" for k in (schema.get("properties") or {}))
        out.append(f"| {code} | {_esc(answer.get('description', ''))}{': ' + keys if keys else ''} |")
    out.append("")
    return out


def markdown(document: dict[str, Any]) -> str:
    """Every operation of ``document``, in the document's order."""
    out: list[str] = []
    for path, ops in document["paths"].items():
        for method in METHODS:
            if method in ops:
                out += _operation(path, method, ops[method])
    return "\n".join(out).rstrip("\n")


# -- the metrics ---------------------------------------------------------------------------------------------
async def _metrics_text() -> str:
    import aiohttp
    from aiohttp import web

    from coordinator_plugins.error_handling import setup

    app = web.Application()
    integration = setup(app, None, {"database": ":memory:", "auto_recover": False, "verify_window": 0, "seed": 1})
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        # one report and one recovery (the retry strategy, which calls the callable again), so
        # that every labelled metric has a sample to show its labels
        await integration.handle_error(ConnectionResetError("peer reset"), {
            "component": "api", "callable": lambda: "ok", "args": (), "kwargs": {}})
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as answer:
            answer.raise_for_status()
            return await answer.text()
    finally:
        await runner.cleanup()


def metrics_markdown() -> str:
    """The metrics the plugin serves at ``GET /metrics``: name, type, labels, help."""
    from prometheus_client.parser import text_string_to_metric_families

    text = asyncio.run(_metrics_text())
    rows = ["| metric | type | labels | what |", "|---|---|---|---|"]
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):
            continue  # the creation time prometheus_client adds to each counter and histogram
        labels = sorted({k for s in family.samples for k in s.labels if k != "le"})
        suffix = "_total" if family.type == "counter" else ""
        rows.append(f"| `{family.name}{suffix}` | {family.type} | {', '.join(f'`{x}`' for x in labels) or ''} "
                    f"| {_esc(family.documentation)} |")
    return "\n".join(rows)
