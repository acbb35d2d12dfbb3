"""Classification: error type, category and severity of an exception or a reported error.

Order of evidence: the context's explicit ``error_type``; the exception class through its MRO
(subclasses count); then component and operation; then message keywords, which never
override a class-based answer. The rules themselves are in :mod:`.rules`; this module applies
them and keeps the answers (``CACHE``).
"""

from __future__ import annotations

import errno as errno_mod
from dataclasses import dataclass

import aiohttp

from coordinator_plugins.error_handling.intake.bounded import BoundedCache
from coordinator_plugins.error_handling.intake.rules import (
    COMPONENT_TYPES,
    RESOURCE_ERRNOS,
    SEVERITY_BY_VALUE,
    category_of,
    errno_of,
    exception_class_by_name,
    keyword_type,
    rule_for,
)
from coordinator_plugins.error_handling.model import ErrorCategory, ErrorSeverity, ErrorType

T, C, S = ErrorType, ErrorCategory, ErrorSeverity


@dataclass(frozen=True, slots=True)
class Classification:
    error_type: ErrorType
    category: ErrorCategory
    severity: ErrorSeverity


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
CACHE: BoundedCache[tuple[object, ...], Classification] = BoundedCache(32_768, 12_000_000)
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
        found = _SHARED[key] = Classification(etype, category, SEVERITY_BY_VALUE.get(category._value_, S.MEDIUM))
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
    one only in its ASCII digits is classified alike (see the note above ``CACHE``)."""
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
    found = CACHE.get(key) if key is not None else None
    if found is not None:
        return found, True
    etype, category, cacheable = _classify(
        exc, message, component, operation, exception_type, explicit_type, has_task, has_worker
    )
    found = _shared(etype, category)
    if cacheable and key is not None:  # frozen: one object serves every hit
        # (the message's length: its key is no longer)
        CACHE.put(key, found, _CLS_ENTRY_BYTES + len(message) + len(component) + len(operation))
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
    rule = rule_for(cls) if cls is not None else None
    category: ErrorCategory | None = None
    if explicit_type is not None:
        etype = explicit_type
        if rule is not None and rule[0] is etype:
            category = rule[1]
    elif rule is not None:
        etype, category = rule
        if etype is T.SYSTEM and errno_of(exc, low) in RESOURCE_ERRNOS | {errno_mod.ENOSPC}:
            etype = T.RESOURCE
    else:
        comp = component.lower()
        etype_or_none = COMPONENT_TYPES.get(comp)
        if etype_or_none is None and "heartbeat" in operation.lower():
            etype_or_none = T.WORKER
        if etype_or_none is None:
            etype_or_none = keyword_type(low)
        elif etype_or_none in (T.COORDINATION, T.TEST_EXECUTION, T.WORKER):
            # A generic component says little: a clear keyword (timeout, network ...) is finer.
            kw = keyword_type(low)
            if kw in (T.TIMEOUT, T.NETWORK, T.DATABASE, T.RESOURCE, T.SCHEDULING, T.DEPENDENCY):
                etype_or_none = kw
        etype = etype_or_none or T.UNKNOWN
    if category is None:
        category = category_of(etype, cls, exc, low, component.lower(), operation.lower(), has_task, has_worker)
    cacheable = (
        etype not in _UNCACHED_TYPES
        and (rule is None or rule[0] is not T.SYSTEM)
        and not isinstance(exc, aiohttp.ClientResponseError)
    )
    return etype, category, cacheable


