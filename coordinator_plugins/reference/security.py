"""Security of the reference coordinator (SPEC 8).

- ``[coordinator] api_token`` (or the environment variable ``COORDINATOR_PLUGINS_API_TOKEN``)
  is required as ``Authorization: Bearer <token>`` on every mutating route of the coordinator,
  compared in constant time; with ``protect_reads`` on its GET routes too. A plugin's routes
  are left to the plugin, whose token defaults to this one.
- Protected mode: :func:`check_listen` refuses an address other than loopback without a token,
  unless ``allow_unauthenticated = true``.
- ``allowed_commands`` names the programs a ``command`` task may run (``argv[0]`` exactly, a
  bare name or an absolute path); an empty list forbids command tasks. Unset, command tasks run
  only where a token guards the coordinator: any program while it listens on loopback, none
  otherwise; without a token they are refused (a JSON 403 saying how to allow them), since
  then anyone who reaches the coordinator could run programs on the workers.
- Every route refuses a page in a browser (:mod:`coordinator_plugins.guard`): a ``Host`` the
  coordinator does not answer to (421), a cross-site ``Origin`` on a state-changing route (403),
  a body not sent as JSON (415). ``allowed_hosts`` lists more names it answers to.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from aiohttp import web

from coordinator_plugins.guard import BrowserGuard, HostPolicy, allowed_hosts
from coordinator_plugins.httpio import (
    BODY_TIMEOUT,
    SAFE_METHODS,
    TOKEN_ENV,
    ApiError,
    is_json_error,
    json_error_from,
    json_response,
    require_bearer,
    token_problem,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """The security keys of the ``[coordinator]`` table."""

    api_token: str = ""
    """Bearer token every POST (and, with protect_reads, every GET) needs; "" = none."""
    allow_unauthenticated: bool = False
    """Listen on a non-loopback address without a token (refused otherwise)."""
    allowed_commands: tuple[str, ...] | None = None
    """Programs a command task may run (names or absolute paths); none = any, on loopback with a token."""
    protect_reads: bool = False
    """With a token, GET routes need it too."""
    body_timeout: float = BODY_TIMEOUT
    """Seconds a request body may take to arrive; later it is answered 408."""
    allowed_hosts: tuple[str, ...] = ()
    """More Host names it answers to than loopback and its own; ["*"] = any."""


SECURITY_KEYS: tuple[str, ...] = tuple(f.name for f in fields(SecuritySettings))


def _allowed_commands(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(
            f"coordinator.allowed_commands: expected a list of program names or absolute paths, got {value!r}"
        )
    out: list[str] = []
    for entry in value:
        if (
            not isinstance(entry, str)
            or not entry
            or "\x00" in entry
            or ("/" in entry and not entry.startswith("/"))
        ):
            raise ValueError(
                "coordinator.allowed_commands: each entry is a program name without '/' (looked up in "
                f"the worker's PATH) or an absolute path, got {entry!r}"
            )
        out.append(entry)
    return tuple(dict.fromkeys(out))


def security_from_config(table: Mapping[str, Any]) -> SecuritySettings:
    """The security keys of a ``[coordinator]`` table, checked: one ValueError listing every
    problem, a line each naming the key."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    token = table.get("api_token")
    if token is None:
        token = os.environ.get(TOKEN_ENV, "")
        where = f"environment variable {TOKEN_ENV}"
    else:
        where = "coordinator.api_token"
    problem = token_problem(token)
    if problem:
        problems.append(f"{where}: {problem}")
    else:
        values["api_token"] = token
    for key in ("allow_unauthenticated", "protect_reads"):
        if key in table:
            if not isinstance(table[key], bool):
                problems.append(f"coordinator.{key}: expected true or false, got {table[key]!r}")
            else:
                values[key] = table[key]
    checks: dict[str, Any] = {
        "allowed_commands": _allowed_commands,
        "allowed_hosts": lambda v: allowed_hosts(v, "coordinator.allowed_hosts"),
        "body_timeout": _body_timeout,
    }
    for key, check in checks.items():
        if key in table:
            try:
                values[key] = check(table[key])
            except ValueError as exc:
                problems.append(str(exc))
    settings = SecuritySettings(**values)
    if settings.protect_reads and not settings.api_token and not problem:
        problems.append(f"coordinator.protect_reads: needs coordinator.api_token (or {TOKEN_ENV}) to be set")
    if problems:
        raise ValueError("\n".join(problems))
    return settings


def _body_timeout(t: Any) -> float:
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or not 0.01 <= t <= 3600:
        raise ValueError(f"coordinator.body_timeout: expected a number from 0.01 to 3600, got {t!r}")
    return float(t)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only loopback addresses (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    try:
        return bool(addresses) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses)
    except ValueError:
        return False


def check_listen(host: str, security: SecuritySettings) -> None:
    """Protected mode: ValueError for a non-loopback address without a token, unless
    ``allow_unauthenticated`` says that is wanted."""
    if security.api_token or security.allow_unauthenticated or is_loopback(host):
        return
    raise ValueError(
        f"coordinator.host: refusing to listen on {host!r}, which is not a loopback address, without "
        "a token: anyone who can reach it could run programs on the workers. Set [coordinator] "
        f"api_token (or the environment variable {TOKEN_ENV}); or, to accept unauthenticated "
        "requests anyway, set [coordinator] allow_unauthenticated = true"
    )


@dataclass(frozen=True, slots=True)
class CommandPolicy:
    """Which programs a command task may run here: ``allowed`` None for any, ``()`` for none;
    ``status`` is the refusal's (403 when a token or a list would allow them, 400 otherwise)."""

    allowed: tuple[str, ...] | None
    why_none: str = ""
    status: int = 400

    @classmethod
    def for_host(cls, host: str, security: SecuritySettings) -> CommandPolicy:
        if security.allowed_commands is not None:
            return cls(security.allowed_commands, "[coordinator] allowed_commands is empty")
        if not security.api_token:
            return cls(
                (),
                "no token guards this coordinator, so anyone who reaches it (a web page in your browser "
                "included) could run programs on the workers. To allow command tasks, set [coordinator] "
                f"api_token (or the environment variable {TOKEN_ENV}), or list the programs they may run "
                'in [coordinator] allowed_commands, e.g. allowed_commands = ["pytest"]',
                403,
            )
        if is_loopback(host):
            return cls(None)
        return cls(
            (),
            f"the coordinator listens on {host!r}, which is not loopback, and [coordinator] "
            "allowed_commands does not list the programs a task may run",
        )

    def forbidden(self) -> ApiError:
        """The refusal of every command task here (``allowed`` is ``()``)."""
        code = "commands_disabled" if self.status == 403 else "command_forbidden"
        return ApiError(self.status, f"command tasks are forbidden here: {self.why_none}", code)

    def refusal(self, program: str) -> str | None:
        """Why a command task whose ``argv[0]`` is ``program`` may not run (None when it may);
        for a policy that allows none, see :meth:`forbidden`."""
        if self.allowed is None or program in self.allowed:
            return None
        if not self.allowed:
            return f"command tasks are forbidden here: {self.why_none}"
        listed = ", ".join(self.allowed)
        return f"argv[0]: {program[:200]!r} is not in [coordinator] allowed_commands ({listed[:500]})"


class RouteGuard:
    """What every route of the coordinator's own passes before its handler: a page in a browser
    is refused (:class:`coordinator_plugins.guard.BrowserGuard`: 421, 403, 415), then the token
    (401) on every POST once one is set, on every GET too with ``protect_reads``. ``security``
    may be replaced until the app starts."""

    def __init__(self, security: SecuritySettings, bind_host: str = "") -> None:
        self.security = security
        self.browser = BrowserGuard(HostPolicy(security.allowed_hosts, bind_host))

    def wrap(self, method: str, handler: Any) -> Any:
        safe = method in SAFE_METHODS
        check = self.browser.check

        async def guarded(request: web.Request) -> web.StreamResponse:
            check(request)
            security = self.security
            if security.api_token and (not safe or security.protect_reads):
                require_bearer(request, security.api_token)
            return await handler(request)

        return guarded


def answers_errors_under(middleware: Any, prefix: str) -> bool:
    """Whether ``middleware`` declares (``json_errors_prefix``) that it answers every error
    under ``prefix`` as JSON and every unhandled exception with a JSON 500, as the error handling
    plugin's does: the coordinator then adds no middleware of its own (one layer fewer per request)."""
    declared = getattr(middleware, "json_errors_prefix", None)
    return isinstance(declared, str) and prefix.startswith(declared)


def error_middleware(prefix: str) -> Any:
    """JSON errors under ``prefix``, and a JSON 500 without a trace for an unhandled exception:
    for a coordinator whose plugins do not answer them (see :func:`answers_errors_under`)."""

    @web.middleware
    async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400 and request.path.startswith(prefix) and not is_json_error(exc):
                return json_error_from(exc)
            raise
        except Exception:  # CancelledError is a BaseException and passes
            logger.exception("unhandled error in %s %s", request.method, request.path)
            return json_response({"error": "internal error", "code": "internal_error"}, 500)

    return json_errors
