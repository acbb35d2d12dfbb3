"""HTTP plumbing shared by the error-handling plugin and the reference coordinator.

One place for what every route must get right: bearer tokens compared in constant time;
JSON request bodies read under a size limit and a deadline, parsed strictly (no ``NaN`` or
``Infinity``, no number that overflows to infinity, bounded nesting) and refused with a JSON 4xx
otherwise; error answers as ``{"error", "code"}`` that keep their headers (``Allow`` on a 405,
``WWW-Authenticate`` on a 401); and responses that are always strict JSON.

Neither the plugin nor the coordinator depends on the other through this module: the plugin
imports nothing of a coordinator, and the coordinator nothing of the plugin.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import sys
from collections.abc import Mapping
from typing import Any

from aiohttp import hdrs, web

TOKEN_ENV = "COORDINATOR_PLUGINS_API_TOKEN"
MAX_BODY = 1024 * 1024
MAX_DEPTH = 32  # nesting of arrays and objects in a request body, the body itself counted
BODY_TIMEOUT = 10.0  # seconds a request body may take to arrive, whole
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Extra OpenAPI paths a host application documents beside a plugin's own, as
# ``{"paths": {...}}``. A document that merges them defines ``#/components/schemas/Error`` and
# the security scheme ``bearer``, which those paths may refer to.
OPENAPI_PATHS_KEY = web.AppKey("openapi_paths", dict)



def openapi_document(title: str, paths: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3.1 document of ``paths``, with the ``Error`` schema and the ``bearer``
    security scheme that the paths of either document refer to."""
    from coordinator_plugins import __version__

    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "code"],
                    "properties": {
                        "error": {"type": "string"},
                        "code": {"type": "string"},
                        "may_be_stored": {
                            "type": "boolean",
                            "description": "on every 503: whether what the request asked may still be stored "
                                           "(true: retry with the same Idempotency-Key to be counted once)",
                        },
                    },
                }
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def declare_bearer(paths: dict[str, Any], token: bool, protect_reads: bool) -> dict[str, Any]:
    """Declare the bearer token, and its JSON 401, on the operations of ``paths`` that need it:
    every one but a GET once a token is set, every GET too with ``protect_reads``."""
    for ops in paths.values():
        for method, op in ops.items():
            if token and (method.upper() not in SAFE_METHODS or protect_reads):
                op["security"] = [{"bearer": []}]
                op["responses"].setdefault(
                    "401",
                    {
                        "description": "missing or wrong bearer token",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    },
                )
    return paths


CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "body_timeout",
    409: "conflict",
    410: "gone",
    413: "body_too_large",
    415: "unsupported_media_type",
    421: "host_not_allowed",
    503: "unavailable",
}


class ApiError(web.HTTPException):
    """An HTTP error with the JSON body ``{"error", "code"}``."""

    def __init__(
        self, status: int, message: str, code: str, headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """``extra``: more fields of the body (a 503's ``may_be_stored``)."""
        self.status_code = status
        super().__init__(
            text=dumps({"error": message, "code": code, **(extra or {})}), content_type="application/json",
            headers=headers,
        )


def bad(message: str, code: str = "invalid_field") -> ApiError:
    return ApiError(400, message, code)


def not_found(message: str) -> ApiError:
    return ApiError(404, message, "not_found")


# -- responses ---------------------------------------------------------------------------------


def _finite(value: Any, seen: set[int]) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict | list | tuple):
        if id(value) in seen:
            raise ValueError("circular reference in a response")
        seen.add(id(value))
        try:
            if isinstance(value, dict):
                return {k: _finite(v, seen) for k, v in value.items()}
            return [_finite(v, seen) for v in value]
        finally:
            seen.discard(id(value))
    return value


# json.dumps with arguments builds a JSONEncoder per call; one serves every response.
_ENCODER = json.JSONEncoder(allow_nan=False, default=str)


def dumps(obj: Any) -> str:
    """Strict JSON: a non-finite float becomes ``null`` (never ``NaN``), other objects ``str()``."""
    try:
        return _ENCODER.encode(obj)
    except ValueError:
        return _ENCODER.encode(_finite(obj, set()))


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=dumps)


def json_error_from(exc: web.HTTPException) -> web.Response:
    """aiohttp's plain-text HTTP error as a JSON one, keeping its headers (``Allow`` ...)."""
    keep = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
    body: dict[str, Any] = {"error": exc.reason, "code": CODES.get(exc.status, "http_error")}
    if exc.status == 503:  # every 503 says it; not knowing, it may be (a retry with the same key is safe)
        body["may_be_stored"] = True
    return web.Response(status=exc.status, text=dumps(body), content_type="application/json", headers=keep)


def is_json_error(exc: web.HTTPException) -> bool:
    return exc.content_type == "application/json"


# -- tokens ------------------------------------------------------------------------------------


def bearer_ok(request: web.BaseRequest, token: str) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>``; constant-time comparison."""
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, given = header.partition(" ")
    # Header text that is not valid UTF-8 arrives surrogate-escaped; encoding never raises.
    given_bytes = given.strip().encode("utf-8", "replace")
    return scheme.lower() == "bearer" and hmac.compare_digest(given_bytes, token.encode("utf-8", "replace"))


def require_bearer(request: web.BaseRequest, token: str) -> None:
    """401 unless the request carries the token (nothing is required when ``token`` is empty)."""
    if token and not bearer_ok(request, token):
        raise ApiError(
            401,
            "missing or wrong bearer token (send Authorization: Bearer <token>)",
            "unauthorized",
            headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="coordinator_plugins"'},
        )


def token_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a bearer token (None when it can): it must be printable ASCII
    without spaces (the characters of RFC 6750's b64token and a few more), at most 4096 long."""
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if len(value) > 4096:
        return "longer than 4096 characters"
    if any(not 0x21 <= ord(c) <= 0x7E for c in value):
        return "must be printable ASCII without spaces"
    return None


def auth_headers(token: str) -> dict[str, str]:
    """The header a client sends to present ``token`` (none for an empty token)."""
    return {hdrs.AUTHORIZATION: f"Bearer {token}"} if token else {}


# -- request bodies ----------------------------------------------------------------------------


class _NonFinite(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NonFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(text)
    return value


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)
_BOM = b"\xef\xbb\xbf"


def _too_deep(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def has_lone_surrogate(value: Any) -> bool:
    """Whether any string in ``value`` (keys included) holds a lone surrogate (``"\\ud800"`` is
    valid JSON, but no UTF-8 text: a database refuses it)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class JsonRefused(ValueError):
    """A request body that is not strict JSON; ``code`` names why for the error answer."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def parse_json(raw: bytes | str) -> Any:
    """Strict JSON, or JsonRefused: malformed text, a non-finite number (``NaN``, ``Infinity``,
    ``1e999``) or nesting deeper than :data:`MAX_DEPTH`."""
    try:
        if isinstance(raw, bytes):  # a BOM is ignored (the utf-8-sig codec is ten times slower)
            text = (raw[3:] if raw.startswith(_BOM) else raw).decode("utf-8")
        else:
            text = raw
        value = _DECODER.decode(text)
    except _NonFinite as exc:
        raise JsonRefused(f"{exc} is not a finite number: NaN and Infinity are refused", "invalid_number") from None
    except RecursionError:
        raise JsonRefused(f"JSON nested deeper than {MAX_DEPTH} levels", "too_deep") from None
    except ValueError as exc:  # UnicodeDecodeError included
        if "integer string conversion" in str(exc):  # a valid integer, longer than Python converts
            limit = sys.get_int_max_str_digits()
            raise JsonRefused(f"an integer of more than {limit} digits is refused", "invalid_number") from None
        raise JsonRefused("malformed JSON body", "malformed_json") from None
    brackets = raw.count(b"[") + raw.count(b"{") if isinstance(raw, bytes) else raw.count("[") + raw.count("{")
    if brackets > MAX_DEPTH and _too_deep(value, MAX_DEPTH):  # fewer brackets cannot nest deeper
        raise JsonRefused(f"JSON nested deeper than {MAX_DEPTH} levels", "too_deep")
    return value


async def read_json(
    request: web.Request, *, required: bool = True, timeout: float = BODY_TIMEOUT, max_body: int = MAX_BODY
) -> dict[str, Any]:
    """The request's JSON object body, or a JSON 4xx: 413 over ``max_body``, 408 when the body
    has not arrived within ``timeout`` seconds (the connection is then closed), 400 for a missing
    (when ``required``), malformed, non-object, non-finite or too deeply nested one. An absent or
    empty optional body is ``{}``. Its media type was checked before the handler ran
    (:func:`coordinator_plugins.guard.check_content_type`, 415)."""
    try:
        if request.content.is_eof():  # the whole body is here already (the common case): no wait
            raw = await request.read()  # (its size is checked below: no header parsed for it)
        else:
            length = request.content_length
            if length is not None and length > max_body:  # refused before a byte is read
                raise ApiError(413, f"request body over {max_body} bytes", "body_too_large")
            async with asyncio.timeout(timeout):
                raw = await request.read()
    except TimeoutError:
        err = ApiError(408, f"request body not received within {timeout:g} s", "body_timeout")
        err.force_close()
        raise err from None
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, f"request body over {max_body} bytes", "body_too_large") from None
    if len(raw) > max_body:
        raise ApiError(413, f"request body over {max_body} bytes", "body_too_large")
    if not raw.strip():
        if required:
            raise bad("a JSON object body is required", "missing_body")
        return {}
    try:
        body = parse_json(raw)
    except JsonRefused as exc:
        raise bad(str(exc), exc.code) from None
    if not isinstance(body, dict):
        raise bad("expected a JSON object", "invalid_body")
    return body
