"""Grouping: a normalized fingerprint per occurrence, and an in-memory index of groups.

Masking turns "Connection reset by peer at 10.0.0.7:5432 (attempt 3)" and the same text with
other numbers into one fingerprint. The index is a dict, O(1) per occurrence, bounded in size.
"""

from __future__ import annotations

import hashlib
import re
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator

from coordinator_plugins.error_handling.intake.bounded import BoundedCache
from coordinator_plugins.error_handling.model import ErrorReport, ErrorSeverity, ResolutionStatus
from coordinator_plugins.error_handling.storage.records import StoredFingerprints

# One pass; at each position the alternatives are tried in this order, the widest shapes first,
# so a uuid is not eaten as hex and numbers, nor an address as numbers.
_MASK = re.compile(
    r"(?P<ts>\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)"
    r"|(?P<uuid>\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)"
    r"|(?P<addr>\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b|\[[0-9a-fA-F:]*:[0-9a-fA-F:]+\](?::\d{1,5})?)"
    r"|(?P<path>(?:[A-Za-z]:)?(?:[\\/][\w.\-]+){2,}[\\/]?)"
    r"|(?P<hex>\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b)"
    r"|(?P<n>(?<![A-Za-z\d])[-+]?\d+(?:\.\d+)?)"  # not inside a word's digits: w17 stays w17
)
# Only whitespace-delimited tokens with a digit or a slash can hold a volatile part.
_VOLATILE = re.compile(r"[\d/\\]").search
_SPACED_TS = re.compile(r"\b\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?")
# A token's shape: its ASCII digits 1-9 read as 1 (0 is kept: "0x" is the one digit _MASK names).
# Every choice _MASK makes is the same for a token and its shape (\d, \w, \b, [0-9a-fA-F] and
# the counted repeats all treat 1-9 alike; the length does not change), so the shape's masked
# text is the token's as long as no digit 1-9 survived masking, i.e. it has no "1". Volatile
# tokens have few shapes ("<n>)", "<addr>", "w-<n>"), so _MASK, 1.5 us a token, seldom runs.
_SHAPE = bytes.maketrans(b"23456789", b"11111111")
SHAPES: dict[bytes, str] = {}  # (the caches of intake are public: tests and tools bound and clear them)
_SHAPES_MAX = 4096
# A first line's shape -> its text, for texts without a digit 1-9. Bounded by entries and by the
# bytes its keys and texts hold (a line may be 500 characters): room for about 65,000 lines of a
# typical error's length, ~15 MB. Groups whose messages carry numbers of varying length have
# several shapes each: 10,000 such groups reported round-robin kept ~60,000 shapes in use, and
# half the lookups missed in a cache of 32,768 (1.4 us a line against 0.8). When either bound is
# reached the cache starts over.
LINES: BoundedCache[bytes, str] = BoundedCache(131_072, 9_000_000)  # bytes of keys and texts
_DIGIT_1_9 = re.compile("[1-9]").search


def _mask(m: re.Match[str]) -> str:
    return f"<{m.lastgroup}>"


def _mask_token(token: str) -> str:
    """``_MASK.sub(_mask, token)`` for a token with a digit or a slash."""
    if token.isascii() and token.isdigit():  # the commonest volatile token: what _MASK makes of it
        return "<n>"
    shape = token.encode("utf-8", "surrogatepass").translate(_SHAPE)
    masked = SHAPES.get(shape)
    if masked is None:
        masked = _MASK.sub(_mask, shape.decode("utf-8", "surrogatepass"))
        if "1" in masked:  # a digit kept (or a 1): the shape's text is not its tokens'
            masked = ""
        if len(SHAPES) >= _SHAPES_MAX:
            SHAPES.clear()
        SHAPES[shape] = masked
    return masked or _MASK.sub(_mask, token)  # never empty otherwise: a token is not


def normalize_message(message: str, remember: bool = True) -> str:
    """The first line of a message with volatile parts masked. ``remember``: keep the answer by
    its shape (a caller that keeps it itself, as ``identify`` does, passes False)."""
    line = message.strip().split("\n", 1)[0][:500]
    # The whole line by its shape first: every step below (the spaced timestamp, split, the
    # token tests, _MASK) decides alike for a line and its shape, so a shape's text serves
    # every line of that shape when no digit 1-9 survived in it (the same argument as tokens).
    shape = line.encode("utf-8", "surrogatepass").translate(_SHAPE)
    out = LINES.get(shape)
    if out is not None:
        return out
    if ":" in line and "-" in line:  # the only timestamp shape with a space in it
        line = _SPACED_TS.sub("<ts>", line)
    # Token by token (str.split and the regex agree on what whitespace is): a regex scan for
    # tokens backtracked over every word without digits, twice the cost of this loop. Words and
    # tokens without a digit or a slash are kept without a call.
    volatile = _VOLATILE
    out = " ".join([t if t.isalpha() or not volatile(t) else _mask_token(t) for t in line.split()])
    if remember and not _DIGIT_1_9(out):
        LINES.put(shape, out, len(shape) + len(out))
    return out


def fingerprint(
    error_type: str, category: str, component: str, operation: str, exception_type: str | None, message: str
) -> str:
    """A stable 16-byte hex fingerprint of what makes two occurrences the same error."""
    return fingerprint_normalized(error_type, category, component, operation, exception_type,
                                  normalize_message(message))


def fingerprint_normalized(
    error_type: str, category: str, component: str, operation: str, exception_type: str | None, normalized: str
) -> str:
    """:func:`fingerprint` of a message already normalized (``normalize_message``).

    The parts are joined with the unit separator; a part that holds one itself (a component
    ``"c\x1fd"`` with operation ``"e"`` would read as component ``"c"``, operation ``"d\x1fe"``) is
    escaped first (``\x1e`` before each ``\x1e`` and ``\x1f``), so that no two different sets of
    parts share a key. A key without such a part is the plain join, as it always was: fingerprints
    of stored groups do not change (an escaped key holds more than five separators, a plain one
    exactly five)."""
    parts = (error_type, category, component, operation, exception_type or "", normalized)
    key = "\x1f".join(parts)
    if key.count("\x1f") != 5:
        key = "\x1f".join(p.replace("\x1e", "\x1e\x1e").replace("\x1f", "\x1e\x1f") for p in parts)
    return hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=16).hexdigest()


def shape_of(message: str) -> bytes:
    """``message`` in UTF-8 with its ASCII digits 2-9 read as 1: the key of the shape caches."""
    return message.encode("utf-8", "surrogatepass").translate(_SHAPE)


def shape_decides(normalized: str) -> bool:
    """True when every message of the same :func:`shape_of` normalizes to ``normalized``: no
    digit 1-9 survived the masking (see the note above ``_SHAPE``)."""
    return _DIGIT_1_9(normalized) is None


CRITICAL = ErrorSeverity.CRITICAL


class GroupIndex:
    """fingerprint -> group, and error_id -> group, capped at ``max_groups``.

    When full, resolved groups are evicted first, least recently seen first; open groups only
    when no resolved one is left. Evicted groups stay in the database: their fingerprints are
    remembered (``stored``: a Bloom filter, a few bytes a group; its false positives cost a
    lookup that finds nothing, it has no false negatives), so a later occurrence looks the group
    up in the store instead of opening a second group, and an evicted group that something still holds (a recovery, the
    writer's queue) is found again as the same object.

    ``open_total`` and ``critical_open`` count every open (and open critical) group, in memory or
    only in the store: kept up to date by :meth:`mark` as groups change, never by walking them.

    An evicted group whose last queued write (``ErrorReport.write_seq``: its resolution, its
    count) is not yet in the store's rows keeps that write's number here (``unsettled``), until
    ``committed()`` (the store's: every write up to it is in the rows) passes it; a lookup of its
    fingerprint waits for that write only, never for the rest of the queue.
    """

    def __init__(self, max_groups: int = 50_000, committed: Callable[[], int] | None = None) -> None:
        self.max_groups = max_groups
        self._by_fp: OrderedDict[str, ErrorReport] = OrderedDict()
        self._by_id: dict[str, ErrorReport] = {}
        self._resolved: OrderedDict[str, None] = OrderedDict()
        # evicted groups still referenced elsewhere: the same object must come back
        self._ghost_fp: weakref.WeakValueDictionary[str, ErrorReport] = weakref.WeakValueDictionary()
        self._ghost_id: weakref.WeakValueDictionary[str, ErrorReport] = weakref.WeakValueDictionary()
        # fingerprints of groups in the store, not necessarily in memory (public: tests force its
        # false positives with a saturated one)
        self.stored = StoredFingerprints()
        # fingerprint -> write seq of an evicted group's last write, while the store's rows lack it
        self._unsettled: dict[str, int] = {}
        self._settle_at = 1024  # size at which the settled ones are dropped (amortized)
        self.committed: Callable[[], int] = committed or _none_committed
        self.evicted = 0
        self.open_total = 0
        self.critical_open = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[ErrorReport]:
        return iter(list(self._by_id.values()))

    def by_fingerprint(self, fp: str) -> ErrorReport | None:
        report = self._by_fp.get(fp)
        if report is not None:
            self._by_fp.move_to_end(fp)
            return report
        if self._ghost_fp:
            ghost = self._ghost_fp.get(fp)
            if ghost is not None:
                self.add(ghost)  # its counters were kept while it was away (mark)
                return ghost
        return None

    def lookup_needed(self, fp: str) -> bool:
        """True when ``fp`` is not in memory (an evicted group that is still held comes back here)
        and a group with it may be in the store."""
        if fp in self._by_fp or self.by_fingerprint(fp) is not None:
            return False
        return fp in self.stored

    def remember_stored(self, fingerprints: StoredFingerprints | Iterable[str]) -> None:
        """Fingerprints of stored groups not (necessarily) in memory: they are looked up on a miss."""
        if isinstance(fingerprints, StoredFingerprints):
            self.stored.merge(fingerprints)
        else:
            self.stored.update(fingerprints)

    def written(self, report: ErrorReport, seq: int) -> None:
        """Write ``seq`` of ``report``'s group is queued. A group no longer indexed (evicted while
        a recovery or a resolution held it) keeps the number for the lookup of its fingerprint."""
        report.write_seq = seq
        if self._by_id.get(report.error_id) is not report:
            self._unsettle(report.fingerprint, seq)

    def unsettled(self, fingerprints: Iterable[str]) -> int:
        """The highest write seq queued for the evicted groups of ``fingerprints`` that the
        store's rows may not hold yet (0: none; a lookup reads the store as it is)."""
        pending = self._unsettled
        if not pending:
            return 0
        need = max((pending.get(fp, 0) for fp in fingerprints), default=0)
        return need if need > self.committed() else 0

    def _unsettle(self, fp: str, seq: int) -> None:
        pending = self._unsettled
        if seq <= pending.get(fp, 0) or seq <= self.committed():
            return
        pending[fp] = seq
        if len(pending) >= self._settle_at:
            done = self.committed()
            for key in [k for k, v in pending.items() if v <= done]:
                del pending[key]
            self._settle_at = max(1024, 2 * len(pending))

    def get(self, error_id: str) -> ErrorReport | None:
        report = self._by_id.get(error_id)
        if report is None and self._ghost_id:
            report = self._ghost_id.get(error_id)
            if report is not None:
                self.add(report)
        return report

    def add(self, report: ErrorReport, counted: bool = False) -> None:
        """Index ``report``. ``counted``: it is already in ``open_total``/``critical_open`` (a group
        loaded from the store, or one that comes back), so only later changes count."""
        if counted:
            report.counted = _state(report)
        if self._ghost_id:
            self._ghost_id.pop(report.error_id, None)
            if self._ghost_fp.get(report.fingerprint) is report:
                del self._ghost_fp[report.fingerprint]
        old = self._by_fp.get(report.fingerprint)
        if old is not None and old.error_id != report.error_id:
            self._forget(old)
        self._by_fp[report.fingerprint] = report
        self._by_fp.move_to_end(report.fingerprint)
        self._by_id[report.error_id] = report
        self.mark(report)
        while len(self._by_id) > self.max_groups:
            self._evict_one()

    def mark(self, report: ErrorReport) -> None:
        """Keep the counters and the resolved-first eviction order in step with the report. A
        group no longer in the index (evicted while its recovery ran) is counted, not indexed:
        eviction would not find it."""
        state = _state(report)
        before = report.counted
        if state != before:
            if before >= 0:
                self.open_total -= before & 1
                self.critical_open -= before >> 1
            self.open_total += state & 1
            self.critical_open += state >> 1
            report.counted = state
        if self._by_id.get(report.error_id) is not report:
            return
        if not state & 1:
            self._resolved[report.error_id] = None
            self._resolved.move_to_end(report.error_id)
        else:
            self._resolved.pop(report.error_id, None)

    def open_groups(self) -> list[ErrorReport]:
        """The open groups in memory (a walk: for tests and tools, not for diagnostics)."""
        return [r for r in self._by_id.values() if r.is_open]

    def count_open(self) -> int:
        """Open groups, in memory or only in the store."""
        return self.open_total

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
        self._ghost_fp[victim.fingerprint] = victim
        self._ghost_id[victim.error_id] = victim
        if victim.fingerprint not in self.stored:  # evicted before (round-robin): held already
            self.stored.add(victim.fingerprint)
        if victim.write_seq:
            self._unsettle(victim.fingerprint, victim.write_seq)
        self.evicted += 1


def _none_committed() -> int:
    return 0  # no store: nothing is in its rows


def _state(report: ErrorReport) -> int:
    """What a group adds to the counters: bit 0 open, bit 1 open and critical."""
    if report.resolution_status is ResolutionStatus.RESOLVED:
        return 0
    return 3 if report.error_severity is CRITICAL else 1
