"""The rules of classification: what an exception's class, a component, an operation and the
words of a message say about an error's type and category, and each category's default
severity. :mod:`.classify` applies them in their order of evidence and caches the answers."""

from __future__ import annotations

import asyncio
import builtins
import errno as errno_mod
import re
import subprocess

import aiohttp

from coordinator_plugins.error_handling.model import ErrorCategory, ErrorSeverity, ErrorType
from coordinator_plugins.error_handling.storage.duckdb.errors import NAMED_CLASSES, database_error_kind

T, C, S = ErrorType, ErrorCategory, ErrorSeverity

# DuckDB's exception classes (module ``_duckdb``) by name, and aiohttp's by name, so that a
# worker reporting ``exception_type = "ConnectionException"`` is classified like the real class.
_NAMED: dict[str, type[BaseException]] = dict(NAMED_CLASSES)
for _name in dir(aiohttp):
    _obj = getattr(aiohttp, _name)
    if isinstance(_obj, type) and issubclass(_obj, BaseException):
        _NAMED.setdefault(_name, _obj)
for _name in dir(builtins):
    _obj = getattr(builtins, _name)
    if isinstance(_obj, type) and issubclass(_obj, BaseException):
        _NAMED[_name] = _obj
_NAMED["CancelledError"] = asyncio.CancelledError
_NAMED["TimeoutExpired"] = subprocess.TimeoutExpired

_DATABASE_RULES: dict[str, tuple[ErrorType, ErrorCategory | None]] = {
    "connection": (T.DATABASE, C.DB_CONNECTION),
    "integrity": (T.DATABASE, C.DB_INTEGRITY),
    "locked": (T.DATABASE, C.DB_LOCKED),
    "memory": (T.RESOURCE, C.SYSTEM_RESOURCE),
    "other": (T.DATABASE, None),  # decided by message: lock -> db_locked, else db_query
}


def _class_rule(cls: type[BaseException]) -> tuple[ErrorType, ErrorCategory | None] | None:
    """The type (and category, when the class fixes it) decided by the class alone."""
    kind = database_error_kind(cls)
    if kind is not None:
        return _DATABASE_RULES[kind]
    if issubclass(cls, TimeoutError | subprocess.TimeoutExpired):
        return T.TIMEOUT, None
    if issubclass(cls, aiohttp.ClientResponseError):
        return T.NETWORK, None  # status decides below when known
    if issubclass(cls, ConnectionError | aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return T.NETWORK, C.CONNECTION
    if issubclass(cls, aiohttp.ClientError):
        return T.NETWORK, C.CONNECTION
    if issubclass(cls, MemoryError):
        return T.RESOURCE, C.SYSTEM_RESOURCE
    if issubclass(cls, PermissionError):
        return T.AUTHORIZATION, C.UNAUTHORIZED
    if issubclass(cls, AssertionError):
        return T.ASSERTION, C.TEST_FAILURE
    if issubclass(cls, ImportError):
        return T.DEPENDENCY, C.DEPENDENCY
    if issubclass(cls, asyncio.InvalidStateError):
        return T.STATE, C.STATE_ERROR
    if issubclass(cls, UnicodeError | ValueError | TypeError):
        return T.VALIDATION, C.VALIDATION
    if issubclass(cls, OSError):
        return T.SYSTEM, None  # errno decides below
    return None


_CLASS_CACHE: dict[type[BaseException], tuple[ErrorType, ErrorCategory | None] | None] = {}

_ERRNO_RE = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)
RESOURCE_ERRNOS = {errno_mod.ENOMEM, errno_mod.EMFILE, errno_mod.ENFILE, errno_mod.EAGAIN}

_KEYWORDS: tuple[tuple[re.Pattern[str], ErrorType], ...] = tuple(
    (re.compile(p), t)
    for p, t in (
        (r"no space left|disk full|out of memory|\boom\b|too many open files|resource exhausted", T.RESOURCE),
        (r"timed? ?out|timeout|deadline exceeded", T.TIMEOUT),
        (r"connection (refused|reset|aborted|closed)|network|unreachable|broken pipe|dns", T.NETWORK),
        (r"duckdb|database|\bsql\b|\bdb\b|query failed|could not set lock", T.DATABASE),
        (r"permission denied|forbidden|not authori[sz]ed", T.AUTHORIZATION),
        (r"unauthori[sz]ed|authentication|invalid token|bad credentials", T.AUTHENTICATION),
        (r"no module named|import(ing)? (error|failed)|missing dependency|failed to import", T.DEPENDENCY),
        (r"heartbeat|worker (lost|offline|crash|died|killed|hang)", T.WORKER),
        (r"scheduler|scheduling", T.SCHEDULING),
        (r"overload|cpu (usage|load)|load average|memory pressure", T.SYSTEM),
        (r"gpu|cuda|device (error|lost)|hardware", T.HARDWARE),
        (r"assert", T.ASSERTION),
        (r"invalid|malformed", T.VALIDATION),
        (r"config(uration)?", T.CONFIGURATION),
    )
)

COMPONENT_TYPES = {
    "worker": T.WORKER,
    "scheduler": T.SCHEDULING,
    "heartbeat_monitor": T.WORKER,
    "database": T.DATABASE,
    "db": T.DATABASE,
    "store": T.DATABASE,
    "coordinator": T.COORDINATION,
    "state": T.STATE,
    "network": T.NETWORK,
    "task": T.TEST_EXECUTION,
    "test": T.TEST_EXECUTION,
    "auth": T.AUTHENTICATION,
    "system": T.SYSTEM,
    "hardware": T.HARDWARE,
}

_DEFAULT_SEVERITY: dict[ErrorCategory, ErrorSeverity] = {
    C.COORDINATOR_CRASH: S.CRITICAL,
    C.DISK_FULL: S.CRITICAL,
    C.DB_CONNECTION: S.HIGH,
    C.DB_LOCKED: S.HIGH,
    C.DB_INTEGRITY: S.HIGH,
    C.WORKER_CRASH: S.HIGH,
    C.WORKER_OFFLINE: S.HIGH,
    C.WORKER_HANG: S.HIGH,
    C.SYSTEM_RESOURCE: S.HIGH,
    C.SYSTEM_OVERLOAD: S.HIGH,
    C.COORDINATOR_ERROR: S.HIGH,
    C.SCHEDULER_STALLED: S.HIGH,
    C.STATE_ERROR: S.HIGH,
    C.UNAUTHORIZED: S.HIGH,
    C.AUTH_ERROR: S.HIGH,
    C.CONNECTION: S.MEDIUM,
    C.TIMEOUT: S.MEDIUM,
    C.TASK_TIMEOUT: S.MEDIUM,
    C.TASK_ERROR: S.MEDIUM,
    C.TASK_RESOURCE: S.MEDIUM,
    C.WORKER_RESOURCE: S.MEDIUM,
    C.DB_QUERY: S.MEDIUM,
    C.DEPENDENCY: S.MEDIUM,
    C.CONFIGURATION: S.MEDIUM,
    C.VALIDATION: S.LOW,
    C.TEST_FAILURE: S.LOW,
    C.UNKNOWN: S.MEDIUM,
}


SEVERITY_BY_VALUE = {c._value_: s for c, s in _DEFAULT_SEVERITY.items()}  # str keys: cheaper to hash


def exception_class_by_name(name: str | None) -> type[BaseException] | None:
    """The class a reported ``exception_type`` names (``"ConnectionResetError"``,
    ``"aiohttp.ClientConnectorError"``, ``"_duckdb.ConnectionException"``), or None."""
    if not name:
        return None
    return _NAMED.get(name.rsplit(".", 1)[-1])


def rule_for(cls: type[BaseException]) -> tuple[ErrorType, ErrorCategory | None] | None:
    try:
        return _CLASS_CACHE[cls]
    except KeyError:
        rule = _class_rule(cls)
        if len(_CLASS_CACHE) < 4096:
            _CLASS_CACHE[cls] = rule
        return rule


# No keyword pattern names a digit, so every digit may be read as 0: a match is the same, and
# messages that differ only in their numbers (the commonest difference) share one cache entry.
assert not any(ch.isdigit() for p, _ in _KEYWORDS for ch in p.pattern)
_ZERO = bytes.maketrans(b"123456789", b"000000000")  # bytes.translate: 7x faster than str's
_KW_CACHE: dict[bytes, ErrorType | None] = {}
_KW_CACHE_MAX = 4096


def keyword_type(text: str) -> ErrorType | None:
    """The type of the first keyword pattern found in ``text`` (cached: 14 regex scans cost more
    than the rest of classification)."""
    key = text.encode("utf-8", "surrogatepass").translate(_ZERO)
    try:
        return _KW_CACHE[key]
    except KeyError:
        pass
    found = None
    for pattern, etype in _KEYWORDS:
        if pattern.search(text):
            found = etype
            break
    if len(_KW_CACHE) >= _KW_CACHE_MAX:
        _KW_CACHE.clear()
    _KW_CACHE[key] = found
    return found


def errno_of(exc: BaseException | None, low: str) -> int | None:
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    m = _ERRNO_RE.search(low)
    return int(m.group(1)) if m else None


def category_of(
    etype: ErrorType,
    cls: type[BaseException] | None,
    exc: BaseException | None,
    low: str,
    comp: str,
    op: str,
    has_task: bool,
    has_worker: bool,
) -> ErrorCategory:
    taskish = has_task or comp in ("task", "test") or "task" in op
    if etype is T.NETWORK:
        if isinstance(exc, aiohttp.ClientResponseError) and exc.status in (401, 403):
            return C.UNAUTHORIZED if exc.status == 403 else C.AUTH_ERROR
        return C.CONNECTION
    if etype is T.TIMEOUT:
        return C.TASK_TIMEOUT if taskish else C.TIMEOUT
    if etype is T.RESOURCE or (etype is T.SYSTEM and cls is not None and issubclass(cls, OSError)):
        err = errno_of(exc, low)
        if err == errno_mod.ENOSPC or "no space left" in low or "disk full" in low:
            return C.DISK_FULL
        if etype is T.SYSTEM and err not in RESOURCE_ERRNOS:
            return C.SYSTEM_RESOURCE if "resource" in low else C.UNKNOWN
        if has_worker or comp == "worker":
            return C.WORKER_RESOURCE
        if taskish:
            return C.TASK_RESOURCE
        return C.SYSTEM_RESOURCE
    if etype is T.SYSTEM:
        return C.SYSTEM_OVERLOAD if re.search(r"overload|cpu|load|pressure", low) else C.SYSTEM_RESOURCE
    if etype is T.HARDWARE:
        return C.WORKER_RESOURCE
    if etype is T.DATABASE:
        if "lock" in low:
            return C.DB_LOCKED
        if re.search(r"connect|closed|unreachable", low):
            return C.DB_CONNECTION
        if re.search(r"constraint|duplicate|integrity|violat", low):
            return C.DB_INTEGRITY
        return C.DB_QUERY
    if etype is T.WORKER:
        if re.search(r"hang|hung|stuck|unresponsive|no progress", low):
            return C.WORKER_HANG
        if re.search(r"crash|died|killed|exit(ed)?|signal|segfault|terminated", low):
            return C.WORKER_CRASH
        if re.search(r"memory|resource|disk|gpu", low):
            return C.WORKER_RESOURCE
        return C.WORKER_OFFLINE
    if etype is T.COORDINATION:
        return C.COORDINATOR_CRASH if re.search(r"crash|fatal|died", low) else C.COORDINATOR_ERROR
    if etype is T.SCHEDULING:
        return C.SCHEDULER_STALLED
    if etype is T.STATE:
        return C.STATE_ERROR
    if etype is T.AUTHENTICATION:
        return C.AUTH_ERROR
    if etype is T.AUTHORIZATION:
        return C.UNAUTHORIZED
    if etype is T.DEPENDENCY:
        return C.DEPENDENCY
    if etype is T.CONFIGURATION:
        return C.CONFIGURATION
    if etype is T.VALIDATION:
        return C.VALIDATION
    if etype in (T.TEST_SETUP, T.TEST_EXECUTION, T.TEST_TEARDOWN, T.TEST_ENVIRONMENT, T.ASSERTION):
        return C.TASK_ERROR if taskish else C.TEST_FAILURE
    return C.UNKNOWN
