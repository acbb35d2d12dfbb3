"""What the context keys mean here: the strings every report may carry (``context_strings``),
and the seed framework's ``related_entities`` and priority flags.

The seed's ``ErrorContext.related_entities`` is a dict (or an object with attributes) naming the
entities an error concerns. Its recovery read ``worker_id`` (a string) and ``task_id`` /
``task_ids`` (a string or a list) from it; ``worker_ids`` is read too, for symmetry. Any other key
(the seed's orchestrator put ``test_id`` there) is kept with the report but names no target.

The seed's classifier let three boolean context keys set the severity, strongest first:
``critical`` -> CRITICAL, ``high_priority`` -> HIGH, ``low_priority`` -> LOW. An explicit
``severity`` in the context wins over all three.

An error handler is called inside its caller's own ``except`` block, so it must never raise
because of a context value (issue 28). :class:`ContextReader` reads every key whose value comes
from a fixed set or has a fixed shape (``error_type``, ``severity``, the priority flags,
``metadata``, ``related_entities``): a value it cannot use is left out of classification, kept
in the report's metadata under ``unrecognized_context`` (so nothing the caller said is lost),
and logged as a WARNING once per distinct value, naming the accepted values.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coordinator_plugins.error_handling.model import MAX_TARGETS, ErrorSeverity, ErrorType, enum_member
from coordinator_plugins.error_handling.text import storable, storable_value

logger = logging.getLogger(__name__)

PRIORITY_FLAGS = (
    ("critical", ErrorSeverity.CRITICAL),
    ("high_priority", ErrorSeverity.HIGH),
    ("low_priority", ErrorSeverity.LOW),
)
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0", "")
_WORKER_KEYS = ("worker_id", "worker_ids")
_TASK_KEYS = ("task_id", "task_ids")


def related_mapping(related: Any, key: str = "related_entities") -> dict[str, Any]:
    """``related_entities`` as a dict: a mapping as is, an object by its public attributes.
    None is empty; anything else (a string, a number, a list) is a ValueError naming the key."""
    if related is None:
        return {}
    if isinstance(related, Mapping):
        return {str(k): v for k, v in related.items()}
    if isinstance(related, str | bytes | int | float | bool | list | tuple | set):
        raise ValueError(f"context.{key}: expected a dict of entity ids, got {type(related).__name__}")
    attrs = getattr(related, "__dict__", None)
    if not isinstance(attrs, dict):
        raise ValueError(f"context.{key}: expected a dict of entity ids, got {type(related).__name__}")
    return {k: v for k, v in attrs.items() if not k.startswith("_")}


def _ids(value: Any) -> list[str]:
    """One id or several: strings and numbers, alone or in a list, tuple or set; empties dropped."""
    items = value if isinstance(value, list | tuple | set | frozenset) else [value]
    out: list[str] = []
    for item in items:
        if item is None or isinstance(item, bool) or not isinstance(item, str | int):
            continue
        text = str(item).strip()
        if text and text not in out and len(out) < MAX_TARGETS:
            out.append(text)
    return out


def related_targets(related: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(worker ids, task ids) that a ``related_entities`` mapping names, in order, deduplicated."""
    workers: list[str] = []
    tasks: list[str] = []
    for keys, out in ((_WORKER_KEYS, workers), (_TASK_KEYS, tasks)):
        for k in keys:
            for i in _ids(related.get(k)):
                if i not in out and len(out) < MAX_TARGETS:
                    out.append(i)
    return workers, tasks


def _flag(ctx: Mapping[str, Any], key: str) -> bool:
    value = ctx.get(key)
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"context.{key}: expected true or false, got {value!r}")


UNRECOGNIZED = "unrecognized_context"  # the metadata key that keeps the values not understood
_ENUM_KEYS = frozenset(("error_type", "severity", "critical", "high_priority", "low_priority", "metadata",
                        "related_entities"))
# Stored metadata (as JSON) is at most this many bytes by default: DuckDB keeps every string of
# more than a few tens of KiB in blocks of its own, and a checkpoint that must pin more of them
# than its memory_limit fails and invalidates the database (70 reports of 1 MB at 64 MB).
MAX_METADATA_BYTES = 16_384
TRUNCATED = "metadata_truncated"  # the metadata key that says what was left out past the cap
_TRUNCATED_ROOM = 2_600  # bytes kept free for the TRUNCATED entry (20 names of up to 100 characters)
_MAX_WARNED = 1000  # distinct unknown values logged; past it, one line says the rest are not


@dataclass(slots=True)
class ContextRead:
    """What the enum-like keys of one context mean: None where absent or not understood."""

    error_type: ErrorType | None = None
    severity: ErrorSeverity | None = None  # explicit ``severity``
    flagged: ErrorSeverity | None = None  # from the seed's priority flags
    metadata: dict[str, Any] | None = None  # storable, with ``unrecognized_context`` when needed
    related: dict[str, Any] | None = None  # storable


_NOTHING = ContextRead()


def _kept(value: Any) -> Any:
    """A value not understood, as it can be stored: JSON-like values as they are, others by repr."""
    try:
        if value is None or isinstance(value, str | int | float | bool | list | tuple | dict):
            return storable_value(value)
    except ValueError:  # nested too deep to store
        pass
    return _shown(value, 1000)


def _shown(value: Any, limit: int) -> str:
    """``repr(value)``, cut to ``limit`` characters; its type's name when the repr fails."""
    try:
        return storable(repr(value)[:limit])
    except Exception:  # a repr that raises, or recurses too deep
        return f"<{type(value).__name__}>"


def _json_bytes(value: Any) -> int:
    """The size of ``value`` as the stores write it (JSON with ASCII escapes: one byte a character)."""
    return len(json.dumps(value, separators=(",", ":"), default=str))


class ContextReader:
    """Reads the context keys that take a value from a fixed set; never raises (see the module).

    One per error handler: it remembers which unknown values it has already warned about."""

    def __init__(self, max_metadata_bytes: int = MAX_METADATA_BYTES) -> None:
        self._warned: set[tuple[str, str]] = set()
        self.unrecognized = 0  # context values not understood, over every report
        self.max_metadata_bytes = max_metadata_bytes
        self.metadata_capped = 0  # reports whose metadata was over the cap

    def read(self, ctx: Mapping[str, Any]) -> ContextRead:
        if _ENUM_KEYS.isdisjoint(ctx):
            return _NOTHING  # the common case: none of these keys
        out = ContextRead()
        bad: dict[str, Any] = {}
        raw = ctx.get("error_type")
        if raw is not None:
            out.error_type = self._member(ErrorType, "error_type", raw, bad)
        raw = ctx.get("severity")
        if raw is not None:
            out.severity = self._member(ErrorSeverity, "severity", raw, bad)
        if "critical" in ctx or "high_priority" in ctx or "low_priority" in ctx:
            on = []
            for key, severity in PRIORITY_FLAGS:
                try:
                    if _flag(ctx, key):
                        on.append(severity)
                except ValueError as exc:
                    self._unknown(key, ctx[key], bad, f"{exc}; the flag is taken as off")
            out.flagged = on[0] if on else None
        raw = ctx.get("related_entities")
        if raw is not None:
            try:
                related = related_mapping(raw)
                out.related = storable_value(related) if related else None
            except ValueError as exc:
                self._unknown("related_entities", raw, bad, f"{exc}; it names no worker or task")
        raw = ctx.get("metadata")
        if raw is not None:
            if not isinstance(raw, dict):
                self._unknown("metadata", raw, bad, f"context.metadata: expected a dict, got {type(raw).__name__}")
            else:
                try:
                    out.metadata = storable_value(raw) if raw else None
                except ValueError as exc:
                    self._unknown("metadata", raw, bad, str(exc))
        if bad:
            out.metadata = {**(out.metadata or {}), UNRECOGNIZED: bad}
        if out.metadata:
            out.metadata = self._capped(out.metadata)
        return out

    def _capped(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """``metadata`` itself when its JSON is within ``max_metadata_bytes``; else its top-level
        entries that fit, in order, and under TRUNCATED what was over the cap (warned once)."""
        cap = self.max_metadata_bytes
        size = _json_bytes(metadata)
        if size <= cap:
            return metadata
        kept: dict[str, Any] = {}
        dropped: list[str] = []
        used = _TRUNCATED_ROOM
        for key, value in metadata.items():
            n = _json_bytes({key: value})
            if used + n <= cap:
                kept[key] = value
                used += n
            else:
                dropped.append(key[:100])
        kept[TRUNCATED] = {"bytes": size, "cap_bytes": cap, "dropped_keys": dropped[:20],
                           "more_dropped_keys": max(0, len(dropped) - 20)}
        self.metadata_capped += 1
        if self.metadata_capped == 1:
            logger.warning(
                "a report's metadata was %d bytes of JSON, over max_metadata_bytes (%d): its entries over the cap "
                "were left out and named under %s (raise [plugins.error_handling] max_metadata_bytes to keep more; "
                "this is not logged again)", size, cap, TRUNCATED)
        return kept

    def _member(self, enum_cls: Any, key: str, raw: Any, bad: dict[str, Any]) -> Any:
        try:
            return enum_member(enum_cls, f"context.{key}", raw)
        except Exception:  # not a value, unhashable, or a repr that raises while the enum says so
            accepted = ", ".join(m.value for m in enum_cls)
            self._unknown(key, raw, bad, f"context.{key}: {_shown(raw, 200)} is not one of {accepted}; "
                                         "the report is classified by everything else")
            return None

    def _unknown(self, key: str, raw: Any, bad: dict[str, Any], why: str) -> None:
        bad[key] = _kept(raw)
        self.unrecognized += 1
        seen = (key, _shown(raw, 200))
        if seen in self._warned or len(self._warned) > _MAX_WARNED:
            return
        self._warned.add(seen)
        if len(self._warned) > _MAX_WARNED:
            logger.warning("more than %d distinct context values were not understood; the rest are not logged",
                           _MAX_WARNED)
            return
        logger.warning("%s (kept in the report's metadata under %s.%s; this value is not logged again)",
                       why, UNRECOGNIZED, key)


_CONTEXT_STR_KEYS = ("component", "operation", "worker_id", "task_id", "hardware_id", "request_id", "user_id")
_CONTEXT_STR_KEYSET = frozenset(_CONTEXT_STR_KEYS)
_NO_STRINGS: dict[str, str | None] = dict.fromkeys(_CONTEXT_STR_KEYS)


def context_strings(ctx: Mapping[str, Any]) -> dict[str, str | None]:
    """The context's strings by key (None when absent or None), each made storable."""
    if type(ctx) is dict:
        # A plain dict whose values of these keys are strings (the common case): only the keys
        # it has are read, in its own order, which is the same result (str() of a str does
        # nothing); any other value takes the loop below, in the keys' order.
        vals = dict(_NO_STRINGS)
        for k, v in ctx.items():
            if k in _CONTEXT_STR_KEYSET and v is not None:
                if type(v) is not str:
                    break
                vals[k] = v if v.isascii() and "\x00" not in v else storable(v)
        else:
            return vals
    get = ctx.get
    vals = {}
    for k in _CONTEXT_STR_KEYS:
        if get(k) is None:
            vals[k] = None
        else:
            text = str(ctx[k])
            vals[k] = text if text.isascii() and "\x00" not in text else storable(text)
    return vals
