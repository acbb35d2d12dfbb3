"""Storable text: what a report carries is made storable before it is grouped or queued.

A lone surrogate (``"\\ud800"``, valid in JSON and in a Python ``str``, but no UTF-8 text) is
refused by the database (DuckDB: "cannot encode str as UTF-8"), and one such value in a batch of
writes used to cost every report that shared the batch. So every string of a report (message,
component and the other context strings, stack trace, metadata keys and values at any depth,
related entities) has each lone surrogate replaced by U+FFFD, the Unicode replacement character
(a valid surrogate pair becomes the character it encodes), and a non-finite float in metadata
(``NaN``, ``Infinity``, only reachable in process: HTTP refuses them) becomes ``None``, so that
every answer is strict JSON. NUL (U+0000), which PostgreSQL's UTF8 text and jsonb refuse,
becomes U+FFFD as well, so that a report is the same text in either store (and a fleet's budget
query, which takes the component, never fails on it). Text is normalized to NFC (composed
form): the composed and decomposed spellings of the same text ("é" as U+00E9 or as "e" with
U+0301) are one string, so one group. Done at intake, for HTTP and for ``report_error`` alike,
so the fingerprint is computed from the stored text.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any

REPLACEMENT = "\ufffd"


def storable(text: str) -> str:
    """``text`` with every lone surrogate and NUL replaced by U+FFFD, in NFC (the same object
    when nothing had to change)."""
    if text.isascii():
        return text if "\x00" not in text else text.replace("\x00", REPLACEMENT)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # UTF-16 round trip: a pair of surrogates becomes its character, a lone one U+FFFD
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return text


def _clean(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        if depth > 200:
            raise ValueError("context.metadata: nested more than 200 levels deep")
        out = None
        for k, v in value.items():
            k2 = storable(k) if isinstance(k, str) else k
            v2 = _clean(v, depth + 1)
            if out is None and (k2 is not k or v2 is not v):
                out = {}
                for k0, v0 in value.items():  # copy what came before the first change
                    if k0 is k:
                        break
                    out[k0] = v0
            if out is not None:
                out[k2] = v2
        return value if out is None else out
    if isinstance(value, list | tuple):
        if depth > 200:
            raise ValueError("context.metadata: nested more than 200 levels deep")
        items = [_clean(v, depth + 1) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return items if isinstance(value, list) else tuple(items)
    return value


def storable_value(value: Any) -> Any:
    """``value`` (a JSON-like tree) with every string made storable and every non-finite float
    ``None``; the same object when nothing had to change, a copy otherwise (never in place)."""
    return _clean(value, 0)
