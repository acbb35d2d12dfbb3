"""What a web page in the operator's browser must not do to a coordinator or the plugin (SPEC 8).

A server on loopback is reachable from every page the operator opens. Three ways a page could
use it, and what closes each:

- **Simple cross-origin requests.** A page may send a POST to any origin without asking first
  when its body is ``text/plain``, form-encoded or carries no Content-Type (a "CORS simple
  request", e.g. ``fetch(url, {method: "POST", mode: "no-cors", body: blob})``): the page cannot
  read the answer, but the request is served. Every state-changing route here accepts a body
  only as ``application/json`` (415 otherwise), which a browser sends cross-origin only after a
  CORS preflight, and no route here ever grants one. A request without a body needs no
  Content-Type (``curl -X POST .../api/recovery/reset`` works); a page's is refused by its Origin.
- **A cross-site Origin.** Browsers name the page's origin on every POST; a state-changing
  request whose ``Origin`` is not the server's own (its ``Host``) is refused (403).
- **DNS rebinding.** A page on a name its owner then points at 127.0.0.1 is, to the browser,
  same-origin with the server it now reaches, so it may send anything and read every answer; its
  requests still name the attacker's host in ``Host``. Every route refuses a ``Host`` the server
  does not answer to (421): loopback names and addresses, the address the connection reached
  (known per request, so this works for a plugin mounted on any app), the configured host, and
  ``allowed_hosts`` (``["*"]``: any). Jupyter's local-host check and the Docker daemon's refusal
  of unknown hosts answer the same attack the same way.

Neither the plugin nor the coordinator depends on the other through this module.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Iterable
from typing import Any

from aiohttp import hdrs, web

from coordinator_plugins.httpio import SAFE_METHODS, ApiError

ANY_HOST = "*"
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAME = re.compile(r"^\.?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")
# A Host header: a bracketed IPv6 address or a name / IPv4 address, then an optional port.
_HOST_HEADER = re.compile(r"^(\[[^\[\]]+\]|[^:\[\]]*)(?::[0-9]{0,5})?$")
_CACHE_LIMIT = 1024  # Host header values remembered per policy (a flood of made-up ones starts it over)
_ASK_SOCKET = 2  # a cached answer: an address that is allowed only if the connection reached it


def _address(text: str) -> IpAddress | None:
    """``text`` as an IP address (brackets, a zone and IPv4-mapped IPv6 undone), else None."""
    try:
        addr = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def allowed_hosts(value: Any, key: str) -> tuple[str, ...]:
    """The ``allowed_hosts`` list of a config table, checked: ValueError naming ``key``.

    Each entry is a host name (``"farm.example.com"``), a name starting with a dot for it and
    every name under it (``".example.com"``), an IP address, or ``"*"`` for any host. No port:
    ports are not checked."""
    if not isinstance(value, list | tuple):
        raise ValueError(f'{key}: expected a list of host names or addresses (or ["*"]), got {value!r}')
    out: list[str] = []
    for entry in value:
        if isinstance(entry, str) and entry == ANY_HOST:
            out.append(entry)
            continue
        name = entry.lower().rstrip(".") if isinstance(entry, str) else ""
        addr = _address(name) if name else None
        if addr is not None:
            out.append(str(addr))
        elif name and len(name) <= 253 and _NAME.match(name):
            out.append(name)
        else:
            raise ValueError(
                f'{key}: each entry is a host name, ".domain" for every name under it, an IP address '
                f'or "*" for any host, without a port; got {entry!r}'
            )
    return tuple(dict.fromkeys(out))


def _host_of(header: str) -> str | None:
    """The host part of a ``Host`` header, lower case, without brackets or a trailing dot."""
    match = _HOST_HEADER.match(header)
    if match is None or not match.group(1):
        return None
    return match.group(1).strip("[]").lower().rstrip(".")


class HostPolicy:
    """Which ``Host`` header values a server answers to (see the module's docstring)."""

    def __init__(self, allowed: Iterable[str] = (), bind_host: str = "") -> None:
        entries = set(allowed_hosts(list(allowed), "allowed_hosts"))
        if bind_host and bind_host not in ("0.0.0.0", "::"):  # a wildcard bind names no host
            with contextlib.suppress(ValueError):  # (a name no Host header could carry adds nothing)
                entries.update(allowed_hosts([bind_host], "host"))
        self.any = ANY_HOST in entries
        self.addresses = {a for a in map(_address, entries) if a is not None}
        self.names = frozenset(e for e in entries if _address(e) is None and not e.startswith("."))
        self.suffixes = tuple(e for e in entries if e.startswith("."))
        self._known: dict[str, int] = {}

    def _decide(self, header: str) -> int:
        """1 allowed, 0 refused, ``_ASK_SOCKET``: an address allowed only if the connection reached it."""
        host = _host_of(header)
        if host is None:
            return 0
        addr = _address(host)
        if addr is not None:
            return 1 if addr.is_loopback or addr in self.addresses else _ASK_SOCKET
        if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: always loopback
            return 1
        return int(host in self.names or any(host.endswith(s) or host == s[1:] for s in self.suffixes))

    def allows(self, request: web.BaseRequest) -> bool:
        if self.any:
            return True
        header = request.headers.get(hdrs.HOST)
        if header is None:  # HTTP/1.0 without Host: not a browser
            return True
        verdict = self._known.get(header)
        if verdict is None:
            if len(self._known) >= _CACHE_LIMIT:
                self._known.clear()
            verdict = self._known[header] = self._decide(header)
        if verdict != _ASK_SOCKET:
            return verdict == 1
        transport = request.transport
        local = transport.get_extra_info("sockname") if transport is not None else None
        if isinstance(local, str | bytes):  # a Unix socket: no browser reaches it
            return True
        if not isinstance(local, tuple) or not local:
            return False
        return _address(str(local[0])) == _address(_host_of(header) or "")

    def refusal(self, request: web.BaseRequest) -> ApiError:
        shown = request.headers.get(hdrs.HOST, "")[:100]
        name = (_host_of(shown) or shown)[:100]
        return ApiError(
            421,
            f"Host {shown!r} is not a name this server answers to (a page on another name may be a DNS "
            f'rebinding attack); to allow it, add "{name}" to allowed_hosts in [coordinator] (or in '
            '[plugins.error_handling] for the plugin on its own), or ["*"] for any host',
            "host_not_allowed",
        )


def _is_json_type(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def check_origin(request: web.BaseRequest) -> None:
    """403 for a state-changing request whose ``Origin`` is not the server's own (its ``Host``);
    a request without ``Origin`` does not come from a page (browsers send it on every POST)."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return
    host = request.headers.get(hdrs.HOST)
    _scheme, sep, authority = origin.partition("://")
    if sep and host is not None and authority.lower() == host.lower():
        return
    raise ApiError(
        403,
        f"cross-origin request refused: Origin {origin[:100]!r} is not this server's own; pages on "
        "other origins may not change anything here",
        "cross_origin",
    )


def check_content_type(request: web.BaseRequest) -> None:
    """415 unless a body comes as ``application/json`` (or ``application/*+json``): the media
    types a browser sends to another origin only after a CORS preflight. A request without a
    body may say anything or nothing (``curl -X POST``; aiohttp's client says
    ``application/octet-stream``): a page's empty POST is refused by :func:`check_origin`."""
    if not request.body_exists:
        return
    given = request.headers.get(hdrs.CONTENT_TYPE)
    if given is None:
        raise ApiError(
            415, "a request body must be sent with Content-Type: application/json", "unsupported_media_type"
        )
    # (the exact common value needs no parse: aiohttp's content_type costs ~5 us on a new request)
    if given != "application/json" and not _is_json_type(request.content_type):
        shown = request.content_type[:100]
        raise ApiError(415, f"expected Content-Type: application/json, got {shown!r}", "unsupported_media_type")


class BrowserGuard:
    """The three checks of this module for one server: ``check`` raises the JSON 421, 403 or 415."""

    def __init__(self, hosts: HostPolicy) -> None:
        self.hosts = hosts

    def check(self, request: web.BaseRequest) -> None:
        if not self.hosts.allows(request):
            raise self.hosts.refusal(request)
        if request.method not in SAFE_METHODS:
            check_origin(request)
            check_content_type(request)
