"""What an occurrence is: its classification and its fingerprint, in one step.

Both depend on the message only through what its ASCII digits leave alone, in most cases:
``classify_base`` says when its answer read no digit, and ``shape_decides`` when the normalized
message is the same for every message of its shape (digits 2-9 read as 1). When both hold, the
pair is remembered under the message's shape and the rest of what they read (exception class or
name, component, operation, explicit type, whether a task or a worker is named), so that the next
occurrence of the same error with other numbers skips the keyword rules, the masking and the hash.
An explicit severity is applied after, as :func:`classify` applies it.
``tests/test_intake_equivalence.py`` compares remembered answers with computed ones.
"""

from __future__ import annotations

from coordinator_plugins.error_handling.intake.bounded import BoundedCache
from coordinator_plugins.error_handling.intake.classify import Classification, classify_base, with_severity
from coordinator_plugins.error_handling.intake.group import (
    fingerprint_normalized,
    normalize_message,
    shape_decides,
    shape_of,
)
from coordinator_plugins.error_handling.model import ErrorSeverity, ErrorType

# Bounded by entries and by an estimate of the memory they hold (an entry is its key's shape and
# strings and about 450 bytes of tuples, a dict slot and a fingerprint); when either bound is
# reached it starts over. Sized for many shapes: messages whose numbers vary in length have several shapes per group
# (10,000 groups with a counter in their text made 41,000 shapes in 100,000 occurrences), and a
# cache that cannot hold them misses most of the time. Measured: ErrorHandler.prepare took
# 2.3-2.4 us per occurrence with every shape kept here, 3.7-4.0 us without this cache. A message
# this cache keeps is not also kept by normalize_message's cache of lines (twice the memory: RSS
# grew 92 MB over 1,000,000 occurrences with both and 131,072 entries here, 27.7 MB without this
# cache, 29.1 MB with it as it is).
KNOWN: BoundedCache[tuple[object, ...], tuple[Classification, str]] = BoundedCache(65_536, 24_000_000)
_ENTRY_BYTES = 450
_KNOWN_LEN = 1024  # longer messages (and contexts) are identified each time


def identify(
    exc: BaseException | None,
    message: str,
    component: str,
    operation: str,
    exception_type: str | None,
    explicit_type: ErrorType | None,
    explicit_severity: ErrorSeverity | None,
    has_task: bool,
    has_worker: bool,
) -> tuple[Classification, str]:
    """(classification, fingerprint) of one occurrence: ``classify(...)`` and
    ``fingerprint(type, category, component, operation, exception_type, message)``."""
    short = len(message) + len(component) + len(operation) <= _KNOWN_LEN
    key: tuple[object, ...] | None = None
    found = None
    shape = b""
    if short:
        shape = shape_of(message)
        key = (
            shape,
            exception_type if exc is None else type(exc),
            component,
            operation,
            explicit_type._value_ if explicit_type is not None else None,
            has_task,
            has_worker,
        )
        found = KNOWN.get(key)
    if found is None:
        cls, digit_free = classify_base(
            exc, message, component, operation, exception_type, explicit_type, has_task, has_worker
        )
        keep = key if digit_free else None  # then this cache keeps it (when its shape decides)
        normalized = normalize_message(message, remember=keep is None)
        fp = fingerprint_normalized(
            cls.error_type._value_, cls.category._value_, component, operation, exception_type, normalized
        )
        if keep is not None and shape_decides(normalized):
            size = _ENTRY_BYTES + len(shape) + len(component) + len(operation) + len(exception_type or "")
            KNOWN.put(keep, (cls, fp), size)
    else:
        cls, fp = found
    return with_severity(cls, explicit_severity), fp
