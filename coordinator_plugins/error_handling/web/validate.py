"""Request validation for the HTTP API: every bad input becomes a JSON 4xx, never a 500."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from coordinator_plugins.error_handling.model import ErrorSeverity, ErrorType
from coordinator_plugins.error_handling.text import storable
from coordinator_plugins.httpio import BODY_TIMEOUT, bad, read_json

MAX_STR = 65_536
_BLANK = " \t\r\n\f\v"  # what "empty" means for a required string; the OpenAPI pattern says the same


async def json_body(request: web.Request, required: bool = True, timeout: float = BODY_TIMEOUT) -> dict[str, Any]:
    """The JSON object body (see :func:`coordinator_plugins.httpio.read_json`)."""
    return await read_json(request, required=required, timeout=timeout)


def opt_str(body: Mapping[str, Any], key: str, required: bool = False, max_len: int = MAX_STR) -> str | None:
    if key not in body:
        if required:
            raise bad(f"{key}: required string is missing", "missing_field")
        return None
    value = body[key]
    if not isinstance(value, str):
        raise bad(f"{key}: expected a string, got {_kind(value)}")
    if required and not value.strip(_BLANK):
        raise bad(f"{key}: must not be empty")
    if len(value) > max_len:
        raise bad(f"{key}: longer than {max_len} characters")
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def enum_value(enum_cls: Any, key: str, source: Mapping[str, Any]) -> Any:
    """The member that ``source[key]`` names exactly (the OpenAPI document lists them), or None
    when the key is absent; null or another spelling is a 400."""
    if key not in source:
        return None
    value = source[key]
    if not isinstance(value, str):
        raise bad(f"{key}: expected a string, got {_kind(value)}")
    try:
        return enum_cls(value)
    except ValueError:
        accepted = ", ".join(m.value for m in enum_cls)
        raise bad(f"{key}: {value!r} is not one of {accepted}", "invalid_enum") from None


def query_int(request: web.Request, key: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad(f"{key}: expected an integer from {lo} to {hi}") from None
    if not lo <= value <= hi:
        raise bad(f"{key}: expected an integer from {lo} to {hi}, got {value}", "out_of_range")
    return value


def query_str(request: web.Request, key: str, max_len: int = 500) -> str | None:
    raw = request.query.get(key)
    if raw is None:
        return None
    if len(raw) > max_len:
        raise bad(f"{key}: longer than {max_len} characters")
    return storable(raw)  # as the stored text is (a NUL or lone surrogate the store would refuse)


def query_severity(request: web.Request) -> ErrorSeverity | None:
    return enum_value(ErrorSeverity, "severity", request.query)


def query_error_type(request: web.Request) -> ErrorType | None:
    return enum_value(ErrorType, "error_type", request.query)


# A cursor is a keyset position (last_seen, error_id): 14 hex digits of microseconds since the
# epoch (up to the year 4253), then the error id's UTF-8 bytes in hex. Every string matching
# CURSOR_PATTERN decodes to a position, so the OpenAPI document can say exactly what is accepted.
CURSOR_PATTERN = "^([0-9a-f]{14}([0-9a-f]{2}){1,128})?$"
_CURSOR = re.compile(CURSOR_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def encode_cursor(last_seen: str, error_id: str) -> str:
    seen = datetime.fromisoformat(last_seen)
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=UTC)
    micros = min(max((seen - _EPOCH) // _MICRO, 0), 16**14 - 1)
    return f"{micros:014x}{error_id.encode('utf-8', 'replace')[:128].hex()}"


def decode_cursor(raw: str | None) -> tuple[str, str] | None:
    """None for no cursor (absent or empty: the first page), else the position it names."""
    if not raw:
        return None
    if not _CURSOR.fullmatch(raw):
        raise bad("cursor: not a cursor returned by this API", "invalid_cursor")
    seen = _EPOCH + int(raw[:14], 16) * _MICRO
    return seen.isoformat(), bytes.fromhex(raw[14:]).decode("utf-8", "replace")
