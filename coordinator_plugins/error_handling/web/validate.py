"""Request validation for the HTTP API: every bad input becomes a JSON 4xx, never a 500."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from coordinator_plugins.error_handling.model import ErrorSeverity, ErrorType

MAX_BODY = 1024 * 1024
MAX_STR = 65_536


class ApiError(web.HTTPException):
    """An HTTP error with the JSON body ``{"error", "code"}``."""

    def __init__(self, status: int, message: str, code: str) -> None:
        self.status_code = status
        super().__init__(text=json.dumps({"error": message, "code": code}), content_type="application/json")


def bad(message: str, code: str = "invalid_field") -> ApiError:
    return ApiError(400, message, code)


def not_found(message: str) -> ApiError:
    return ApiError(404, message, "not_found")


async def json_body(request: web.Request, required: bool = True) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "request body over 1 MiB", "body_too_large")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "request body over 1 MiB", "body_too_large") from None
    if not raw.strip():
        if required:
            raise bad("a JSON object body is required", "missing_body")
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad("malformed JSON body", "malformed_json") from None
    if not isinstance(body, dict):
        raise bad("expected a JSON object", "invalid_body")
    return body


def opt_str(body: Mapping[str, Any], key: str, required: bool = False, max_len: int = MAX_STR) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise bad(f"{key}: required string is missing", "missing_field")
        return None
    if not isinstance(value, str):
        raise bad(f"{key}: expected a string")
    if required and not value.strip():
        raise bad(f"{key}: must not be empty")
    if len(value) > max_len:
        raise bad(f"{key}: longer than {max_len} characters")
    return value


def enum_value(enum_cls: Any, key: str, value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad(f"{key}: expected a string")
    try:
        return enum_cls(value.lower())
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
    return raw


def query_severity(request: web.Request) -> ErrorSeverity | None:
    return enum_value(ErrorSeverity, "severity", request.query.get("severity"))


def query_error_type(request: web.Request) -> ErrorType | None:
    return enum_value(ErrorType, "error_type", request.query.get("error_type"))


def encode_cursor(last_seen: str, error_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([last_seen, error_id]).encode()).decode().rstrip("=")


def decode_cursor(raw: str | None) -> tuple[str, str] | None:
    if raw is None:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if isinstance(data, list) and len(data) == 2 and all(isinstance(x, str) for x in data) and len(data[1]) <= 64:
            from datetime import datetime

            datetime.fromisoformat(data[0])
            return data[0], data[1]
    except (ValueError, binascii.Error, UnicodeDecodeError):
        pass
    raise bad("cursor: not a cursor returned by this API", "invalid_cursor")
