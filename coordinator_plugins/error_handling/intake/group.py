"""Grouping: a normalized fingerprint per occurrence, and an in-memory index of groups.

Masking turns "Connection reset by peer at 10.0.0.7:5432 (attempt 3)" and the same text with
other numbers into one fingerprint. The index is a dict, O(1) per occurrence, bounded in size.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterator

from coordinator_plugins.error_handling.model import ErrorReport

# One pass; at each position the alternatives are tried in this order, the widest shapes first,
# so a uuid is not eaten as hex and numbers, nor an address as numbers.
_MASK = re.compile(
    r"(?P<ts>\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)"
    r"|(?P<uuid>\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)"
    r"|(?P<addr>\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b|\[[0-9a-fA-F:]*:[0-9a-fA-F:]+\](?::\d{1,5})?)"
    r"|(?P<path>(?:[A-Za-z]:)?(?:[\\/][\w.\-]+){2,}[\\/]?)"
    r"|(?P<hex>\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b)"
    r"|(?P<n>(?<![A-Za-z])[-+]?\d+(?:\.\d+)?)"
)
# Only whitespace-delimited tokens with a digit or a slash can hold a volatile part.
_VOLATILE = re.compile(r"[\d/\\]").search
_SPACED_TS = re.compile(r"\b\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?")
_CACHE: dict[str, str] = {}
_CACHE_MAX = 4096


def _mask(m: re.Match[str]) -> str:
    return f"<{m.lastgroup}>"


def _mask_token(token: str) -> str:
    if not _VOLATILE(token):
        return token
    if token.isascii() and token.isdigit():  # the commonest volatile token: what _MASK makes of it
        return "<n>"
    return _MASK.sub(_mask, token)


def normalize_message(message: str) -> str:
    """The first line of a message with volatile parts masked."""
    cached = _CACHE.get(message)
    if cached is not None:
        return cached
    line = message.strip().split("\n", 1)[0][:500]
    if ":" in line and "-" in line:  # the only timestamp shape with a space in it
        line = _SPACED_TS.sub("<ts>", line)
    # Token by token (str.split and the regex agree on what whitespace is): a regex scan for
    # tokens backtracked over every word without digits, twice the cost of this loop.
    out = " ".join([_mask_token(t) for t in line.split()])
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[message] = out
    return out


def fingerprint(
    error_type: str, category: str, component: str, operation: str, exception_type: str | None, message: str
) -> str:
    """A stable 16-byte hex fingerprint of what makes two occurrences the same error."""
    key = "\x1f".join((error_type, category, component, operation, exception_type or "", normalize_message(message)))
    return hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=16).hexdigest()


class GroupIndex:
    """fingerprint -> group, and error_id -> group, capped at ``max_groups``.

    When full, resolved groups are evicted first, least recently seen first; open groups only
    when no resolved one is left. Evicted groups stay in the database.
    """

    def __init__(self, max_groups: int = 50_000) -> None:
        self.max_groups = max_groups
        self._by_fp: OrderedDict[str, ErrorReport] = OrderedDict()
        self._by_id: dict[str, ErrorReport] = {}
        self._resolved: OrderedDict[str, None] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[ErrorReport]:
        return iter(list(self._by_id.values()))

    def by_fingerprint(self, fp: str) -> ErrorReport | None:
        report = self._by_fp.get(fp)
        if report is not None:
            self._by_fp.move_to_end(fp)
        return report

    def get(self, error_id: str) -> ErrorReport | None:
        return self._by_id.get(error_id)

    def add(self, report: ErrorReport) -> None:
        old = self._by_fp.get(report.fingerprint)
        if old is not None and old.error_id != report.error_id:
            self._forget(old)
        self._by_fp[report.fingerprint] = report
        self._by_id[report.error_id] = report
        self.mark(report)
        while len(self._by_id) > self.max_groups:
            self._evict_one()

    def mark(self, report: ErrorReport) -> None:
        """Keep the resolved-first eviction order in step with the report's status. A group no
        longer in the index (evicted while its recovery ran) is left out: eviction would not
        find it."""
        if self._by_id.get(report.error_id) is not report:
            return
        if not report.is_open:
            self._resolved[report.error_id] = None
            self._resolved.move_to_end(report.error_id)
        else:
            self._resolved.pop(report.error_id, None)

    def open_groups(self) -> list[ErrorReport]:
        return [r for r in self._by_id.values() if r.is_open]

    def count_open(self) -> int:
        return len(self._by_id) - len(self._resolved)

    def _forget(self, report: ErrorReport) -> None:
        self._by_id.pop(report.error_id, None)
        self._resolved.pop(report.error_id, None)
        if self._by_fp.get(report.fingerprint) is report:
            del self._by_fp[report.fingerprint]

    def _evict_one(self) -> None:
        if self._resolved:
            error_id, _ = self._resolved.popitem(last=False)
            victim = self._by_id[error_id]
        else:
            _, victim = next(iter(self._by_fp.items()))
        self._forget(victim)
        self.evicted += 1
