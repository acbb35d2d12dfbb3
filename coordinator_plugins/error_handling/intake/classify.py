"""Classification: error type, category and severity of an exception or a reported error.

Order of evidence: the context's explicit ``error_type``; the exception class through its MRO
(subclasses count); then component and operation; then message keywords, which never
override a class-based answer.
"""

from __future__ import annotations

import asyncio
import builtins
import errno as errno_mod
import re
import subprocess
from dataclasses import dataclass

import aiohttp

from coordinator_plugins.error_handling.intake.bounded import BoundedCache
from coordinator_plugins.error_handling.model import ErrorCategory, ErrorSeverity, ErrorType
from coordinator_plugins.error_handling.storage.duckdb.errors import NAMED_CLASSES, database_error_kind

T, C, S = ErrorType, ErrorCategory, ErrorSeverity


@dataclass(frozen=True, slots=True)
class Classification:
    error_type: ErrorType
    category: ErrorCategory
    severity: ErrorSeverity


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
_RESOURCE_ERRNOS = {errno_mod.ENOMEM, errno_mod.EMFILE, errno_mod.ENFILE, errno_mod.EAGAIN}

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

_COMPONENT_TYPES = {
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


_SEVERITY_BY_VALUE = {c._value_: s for c, s in _DEFAULT_SEVERITY.items()}  # str keys: cheaper to hash


def exception_class_by_name(name: str | None) -> type[BaseException] | None:
    """The class a reported ``exception_type`` names (``"ConnectionResetError"``,
    ``"aiohttp.ClientConnectorError"``, ``"_duckdb.ConnectionException"``), or None."""
    if not name:
        return None
    return _NAMED.get(name.rsplit(".", 1)[-1])


def _rule_for(cls: type[BaseException]) -> tuple[ErrorType, ErrorCategory | None] | None:
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


def _keyword_type(text: str) -> ErrorType | None:
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


# Classifications by what they depend on. Keyword and category rules name no digit and match no
# digit (no \d, \w, "." or negated class in them), and \b only asks whether a neighbour is a
# word character: so a message and the same with each run of ASCII digits read as one "0" match
# every rule alike (a run stays a run, its neighbours keep theirs). Only the errno (of an
# OSError or "[errno N]" in the text) and an HTTP status read digits or the exception itself:
# the classifications that may read them (a resource or system type, an OSError class's rule,
# a response error) are never cached. Everything else classify reads is in the key
# (tests/test_intake_equivalence.py compares cached answers with computed ones).
_ZERO_ALL = bytes.maketrans(b"123456789", b"000000000")
# Bounded by entries (32,768) and by an estimate of the memory its entries hold (their keys' texts
# and about 300 bytes of tuple and dict slot each): 32,768 keys of 2 KB each would be 70 MB.
_CLS_CACHE: BoundedCache[tuple[object, ...], Classification] = BoundedCache(32_768, 12_000_000)
_CLS_ENTRY_BYTES = 300
_CACHED_LEN = 2048  # longer texts (message, component, operation, type) are classified each time
_UNCACHED_TYPES = (T.RESOURCE, T.SYSTEM)


_SHARED: dict[tuple[str, str], Classification] = {}  # at most one per (type, category) pair


def _shared(etype: ErrorType, category: ErrorCategory) -> Classification:
    """The classification with the category's default severity; one object per pair (frozen),
    so the cache's entries are not 32,768 more objects for the garbage collector to walk."""
    key = (etype._value_, category._value_)
    found = _SHARED.get(key)
    if found is None:
        found = _SHARED[key] = Classification(etype, category, _SEVERITY_BY_VALUE.get(category._value_, S.MEDIUM))
    return found


def classify(
    exc: BaseException | None,
    message: str,
    component: str = "",
    operation: str = "",
    *,
    exception_type: str | None = None,
    explicit_type: ErrorType | None = None,
    explicit_severity: ErrorSeverity | None = None,
    has_task: bool = False,
    has_worker: bool = False,
) -> Classification:
    """Classify one error. ``exc`` wins over ``exception_type`` (a class name from a report)."""
    found, _ = classify_base(exc, message, component, operation, exception_type, explicit_type, has_task,
                             has_worker)
    return with_severity(found, explicit_severity)


def classify_base(
    exc: BaseException | None,
    message: str,
    component: str,
    operation: str,
    exception_type: str | None,
    explicit_type: ErrorType | None,
    has_task: bool,
    has_worker: bool,
) -> tuple[Classification, bool]:
    """:func:`classify` without an explicit severity, and whether the answer read no digit of the
    message (nor anything of ``exc`` but its class): then every message that differs from this
    one only in its ASCII digits is classified alike (see the note above ``_CLS_CACHE``)."""
    long = len(message) + len(component) + len(operation) + len(exception_type or "") > _CACHED_LEN
    key = None if long else (  # cached keys stay small: 32,768 keys of 1 MB each would be 32 GB
        # the message (UTF-8) with each run of ASCII digits made one "0" (runs of up to 10 digits;
        # longer ones stay runs of a few): classify's rules read it as they read the message
        message.encode("utf-8", "surrogatepass").translate(_ZERO_ALL)
        .replace(b"0000", b"0").replace(b"00", b"0").replace(b"00", b"0"),
        exception_type if exc is None else type(exc),
        component,
        operation,
        explicit_type._value_ if explicit_type is not None else None,  # an Enum's hash is a Python call
        has_task,
        has_worker,
    )
    found = _CLS_CACHE.get(key) if key is not None else None
    if found is not None:
        return found, True
    etype, category, cacheable = _classify(
        exc, message, component, operation, exception_type, explicit_type, has_task, has_worker
    )
    found = _shared(etype, category)
    if cacheable and key is not None:  # frozen: one object serves every hit
        # (the message's length: its key is no longer)
        _CLS_CACHE.put(key, found, _CLS_ENTRY_BYTES + len(message) + len(component) + len(operation))
    return found, cacheable


def with_severity(found: Classification, explicit_severity: ErrorSeverity | None) -> Classification:
    """``found`` with the report's explicit severity, when it gives one other than the default."""
    if explicit_severity is not None and explicit_severity is not found.severity:
        return Classification(found.error_type, found.category, explicit_severity)
    return found


def _classify(
    exc: BaseException | None,
    message: str,
    component: str,
    operation: str,
    exception_type: str | None,
    explicit_type: ErrorType | None,
    has_task: bool,
    has_worker: bool,
) -> tuple[ErrorType, ErrorCategory, bool]:
    """(type, category, whether the answer may be cached: it read no digit of the message and
    nothing of ``exc`` but its class)."""
    cls: type[BaseException] | None = type(exc) if exc is not None else exception_class_by_name(exception_type)
    low = message.lower()
    rule = _rule_for(cls) if cls is not None else None
    category: ErrorCategory | None = None
    if explicit_type is not None:
        etype = explicit_type
        if rule is not None and rule[0] is etype:
            category = rule[1]
    elif rule is not None:
        etype, category = rule
        if etype is T.SYSTEM and _errno_of(exc, low) in _RESOURCE_ERRNOS | {errno_mod.ENOSPC}:
            etype = T.RESOURCE
    else:
        comp = component.lower()
        etype_or_none = _COMPONENT_TYPES.get(comp)
        if etype_or_none is None and "heartbeat" in operation.lower():
            etype_or_none = T.WORKER
        if etype_or_none is None:
            etype_or_none = _keyword_type(low)
        elif etype_or_none in (T.COORDINATION, T.TEST_EXECUTION, T.WORKER):
            # A generic component says little: a clear keyword (timeout, network ...) is finer.
            kw = _keyword_type(low)
            if kw in (T.TIMEOUT, T.NETWORK, T.DATABASE, T.RESOURCE, T.SCHEDULING, T.DEPENDENCY):
                etype_or_none = kw
        etype = etype_or_none or T.UNKNOWN
    if category is None:
        category = _category(etype, cls, exc, low, component.lower(), operation.lower(), has_task, has_worker)
    cacheable = (
        etype not in _UNCACHED_TYPES
        and (rule is None or rule[0] is not T.SYSTEM)
        and not isinstance(exc, aiohttp.ClientResponseError)
    )
    return etype, category, cacheable


def _errno_of(exc: BaseException | None, low: str) -> int | None:
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    m = _ERRNO_RE.search(low)
    return int(m.group(1)) if m else None


def _category(
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
        err = _errno_of(exc, low)
        if err == errno_mod.ENOSPC or "no space left" in low or "disk full" in low:
            return C.DISK_FULL
        if etype is T.SYSTEM and err not in _RESOURCE_ERRNOS:
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
