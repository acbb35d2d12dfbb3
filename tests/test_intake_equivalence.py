"""The fast paths of intake give what the plain ones give: same fingerprints, same classification.

normalize_message masks lines and tokens through caches of their shapes (digits 1-9 read as 1), and
classify caches its answers by the message with each run of digits read as one. Both are checked
here against the plain computation on a broad corpus (the other tests' messages, hex, uuids,
addresses, paths, timestamps, unicode digits and spaces, lone surrogates, digits inside words,
errno and status numbers), cold and warm, in shuffled orders and with caches that overflow.
"""

from __future__ import annotations

import errno
import hashlib
import random
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration, validate_config
from coordinator_plugins.error_handling.intake import classify as classify_mod
from coordinator_plugins.error_handling.intake.bounded import BoundedCache
from coordinator_plugins.error_handling.intake import group as group_mod
from coordinator_plugins.error_handling.intake import identify as identify_mod
from coordinator_plugins.error_handling.intake.classify import classify
from coordinator_plugins.error_handling.intake.group import fingerprint, normalize_message
from coordinator_plugins.error_handling.model import (
    ErrorCategory,
    ErrorContext,
    ErrorReport,
    ErrorSeverity,
    ErrorType,
    ResolutionStatus,
)
from coordinator_plugins.error_handling.storage.records import GroupRecord, OccurrenceRecord

# -- the plain normalize_message, as it was before the shape cache (verbatim) ------------------
_REF_MASK = re.compile(
    r"(?P<ts>\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)"
    r"|(?P<uuid>\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)"
    r"|(?P<addr>\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b|\[[0-9a-fA-F:]*:[0-9a-fA-F:]+\](?::\d{1,5})?)"
    r"|(?P<path>(?:[A-Za-z]:)?(?:[\\/][\w.\-]+){2,}[\\/]?)"
    r"|(?P<hex>\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b)"
    r"|(?P<n>(?<![A-Za-z\d])[-+]?\d+(?:\.\d+)?)"
)
_REF_VOLATILE = re.compile(r"[\d/\\]").search
_REF_SPACED_TS = re.compile(r"\b\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?")


def _ref_mask_token(token: str) -> str:
    if not _REF_VOLATILE(token):
        return token
    if token.isascii() and token.isdigit():
        return "<n>"
    return _REF_MASK.sub(lambda m: f"<{m.lastgroup}>", token)


def reference_normalize(message: str) -> str:
    line = message.strip().split("\n", 1)[0][:500]
    if ":" in line and "-" in line:
        line = _REF_SPACED_TS.sub("<ts>", line)
    return " ".join([t if t.isalpha() else _ref_mask_token(t) for t in line.split()])


# -- a corpus -----------------------------------------------------------------------------------
KNOWN = [  # the messages of the other tests (test_errors, test_scale) and the benchmarks
    "Connection reset by peer at 10.0.0.7:5432 (attempt 3)",
    "Connection reset by peer at 192.168.4.20:6000 (attempt 17)",
    "job 3f2a9c1e-1111-2222-3333-444455556666 at 2026-11-28T10:00:00Z in /var/x/y.py", "exit code 137 after 30 s",
    "exit code 1", "retry 12) of 3,", "port 5432 refused", "value \u0663\u0664 is out of range",
    "deadbeef12 and 12345678",
    "-5 and +7.5", "Connection reset by peer at 10.0.3.17:5432 (attempt 12)", "task 7 timed out after 3.25s",
    "at 2026-12-01T12:30:45.123Z worker w-12 lost heartbeat", "2026-12-01 12:30:45,9 scheduler stalled",
    "uuid 123e4567-e89b-12d3-a456-426614174000 failed", "0x7f3a12 segfault in /usr/lib/x86_64/libc.so.6",
    "deadbeef12 checksum 1234abcd99 mismatch", "v1.2.3 db1 table t12 query failed", "[fe80::1]:8080 unreachable",
    "9999-99-99 99:99:99 out of memory", "C:\\data\\run12\\out.txt: no space left", "1 2 3 -4 +5.6 7e8",
    "db1 failed", "db2 failed", "[Errno 28] No space left on device", "Connection already closed!",
    "task 99 timed out after 1.12s [kind abc]", "worker w-3 lost heartbeat 12345 [kind zzz]",
    "duckdb query failed on table 4: row 77 [kind oom]", "No module named 'torch'", "expected 3 got 4",
    "worker w3 crashed with signal 9", "", "   ", "\n\nsecond line 12", "first 1\nsecond 2",
]
FRAGMENTS = [
    "0", "7", "12", "137", "5432", "65535", "123456", "1234567890", "00", "007", "-5", "+7.5", "3.25", "1.2.3.4",
    "10.0.0.7", "10.0.0.7:5432", "256.1.1.1", "1.2.3", "v1.2.3", "[::1]", "[fe80::1]:8080", "[::]", "0x1f", "0X1F",
    "0xdeadbeef", "1x5f", "deadbeef", "deadbeef12", "12345678", "1234abcd99", "abcdef0123456789", "cafe1234",
    "3f2a9c1e-1111-2222-3333-444455556666", "123e4567-e89b-12d3-a456-426614174000", "2026-11-28T10:00:00Z",
    "2026-11-28T10:00:00.123+02:00", "2026-11-28T10:00:00,5-0530", "2026-11-28", "10:00:00", "/var/x/y.py",
    "/usr/lib/x86_64/libc.so.6", "C:\\data\\run12\\out.txt", "a/b", "/a/b/", "\\\\srv\\share\\f1", "./rel/p2/x",
    "db1", "1db", "x86_64", "abc123", "w-3", "t12", "7e8", "1e-5", "(attempt", "3)", "12)", "3,", "4:", "[kind",
    "abc]", "\u0663\u0664", "\u0661\u0662\u0663x", "\uff11\uff12", "caf\u00e9", "na\u00efve42", "\u00e91",
    "\ud800", "\udfff1", "\U0001f600", "\U0001f6002", "oom", "5oom", "oom5", "sql9", "dns0", "gpu0", "cuda11",
    "timeout42", "[errno", "28]", "[errno 28]", "[Errno 12]", "errno=24", "401", "403", "503", "http/1.1",
    "x" * 40, "9" * 30, "a1" * 30, "T", "Z", "-", "+", ":", ".", ",", "_", "--1", "+-2", "1-2-3", "12-34-5678",
]
SPACES = [" ", " ", " ", "  ", "\t", "\u00a0", "\u2003", "\x1c", "\x1f", "\u3000", "\r", "\n", "\x0b", "\x0c"]
WORDS = ["Connection", "reset", "by", "peer", "at", "worker", "lost", "heartbeat", "timed", "out", "table",
         "query", "failed", "disk", "full", "no", "space", "left", "error", "config", "invalid", "token"]


def corpus(n: int, seed: int = 18) -> list[str]:
    rng = random.Random(seed)
    out = list(KNOWN)
    for _ in range(n):
        parts = [rng.choice(FRAGMENTS if rng.random() < 0.6 else WORDS) for _ in range(rng.randint(1, 9))]
        if rng.random() < 0.3:  # glue fragments into one token
            parts = ["".join(parts[:3]), *parts[3:]]
        text = ""
        for p in parts:
            text += p + rng.choice(SPACES)
        out.append(text if rng.random() < 0.9 else text * rng.randint(20, 40))  # some past 500 characters
    return out


def _redigit(text: str, rng: random.Random) -> str:
    """``text`` with its ASCII digits changed (each kept, or made another digit)."""
    return "".join(rng.choice("0123456789") if c in "0123456789" and rng.random() < 0.7 else c for c in text)


# -- normalize ----------------------------------------------------------------------------------
def test_normalize_is_the_plain_masking_on_a_broad_corpus(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    texts = corpus(6000)
    texts += [_redigit(t, rng) for t in texts]  # the same shapes with other digits: the cache's hits
    expected = {t: reference_normalize(t) for t in texts}
    group_mod.SHAPES.clear()
    group_mod.LINES.clear()
    for _ in range(2):  # cold, then warm
        for t in texts:
            assert normalize_message(t) == expected[t], repr(t)
        rng.shuffle(texts)
    assert group_mod.LINES and group_mod.SHAPES  # both caches were used
    monkeypatch.setattr(group_mod, "_SHAPES_MAX", 7)  # caches that keep overflowing
    monkeypatch.setattr(group_mod.LINES, "max_entries", 5)
    group_mod.SHAPES.clear()
    group_mod.LINES.clear()
    for t in texts[:3000]:
        assert normalize_message(t) == expected[t], repr(t)
    assert len(group_mod.LINES) <= 5 and len(group_mod.SHAPES) <= 7
    # the byte budget: a cache of long lines starts over long before its entry cap
    monkeypatch.setattr(group_mod.LINES, "max_entries", 1_000_000)
    monkeypatch.setattr(group_mod.LINES, "budget", 20_000)
    group_mod.LINES.clear()
    long_lines = [f"failure {chr(97 + i % 26)}{'x' * 400} in step <n>" for i in range(200)]
    for t in long_lines + texts[:500]:
        assert normalize_message(t) == (expected.get(t) or reference_normalize(t)), repr(t)
        kept = sum(len(k) + len(v) for k, v in group_mod.LINES.items())
        assert kept <= 20_000 + 1000, kept


def test_normalize_known_cases() -> None:
    assert normalize_message("job 3f2a9c1e-1111-2222-3333-444455556666 at 2026-11-28T10:00:00Z in /var/x/y.py") == \
        "job <uuid> at <ts> in <path>"
    # a digit that survives masking is the token's own, never a cached shape's
    assert normalize_message("abc123") == "abc123" and normalize_message("abc923") == "abc923"
    assert normalize_message("worker w17 down") != normalize_message("worker w18 down")  # ids stay whole
    assert normalize_message("v1.2.3 db1") == "v1.<n> db1" and normalize_message("v7.2.3 db2") == "v7.<n> db2"
    assert normalize_message("1x5f 0x5f") == "<n>x5f <hex>"  # "0x" is a literal of the mask: 0 is kept
    for t in KNOWN:
        assert normalize_message(t) == reference_normalize(t)


def test_fingerprints_are_those_of_the_plain_masking() -> None:
    for t in corpus(500, seed=3):
        key = "\x1f".join(("network", "connection", "comp", "op", "", reference_normalize(t)))
        want = hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=16).hexdigest()
        assert fingerprint("network", "connection", "comp", "op", None, t) == want


def test_fingerprint_parts_cannot_run_into_each_other() -> None:
    """A separator inside a part (from a client's component, operation or exception type) must
    not make two different reports one group; keys without one are the plain join."""
    def fp(comp: str, op: str, exc: str | None = None) -> str:
        return fingerprint("network", "connection", comp, op, exc, "m")

    assert fp("c\x1fd", "e") != fp("c", "d\x1fe")
    assert fp("c\x1e", "\x1fe") != fp("c\x1e\x1f", "e") != fp("c", "\x1e\x1fe")
    assert fp("c", "op", "E\x1fm") != fp("c", "op", "E") != fp("c\x1fop", "", "E")
    assert len({fp(a, b) for a in ("x", "x\x1f", "x\x1e", "\x1f") for b in ("y", "\x1fy", "\x1ey", "")}) == 16
    plain = hashlib.blake2b("network\x1fconnection\x1fc\x1eq\x1fop\x1f\x1fm".encode(), digest_size=16).hexdigest()
    assert fp("c\x1eq", "op") == plain  # no separator inside: the key it always had


# -- classify -----------------------------------------------------------------------------------
TEMPLATES = [
    "Connection reset by peer at 10.0.3.17:5432 (attempt 12)", "task 7 timed out after 3.25s",
    "worker w-12 lost heartbeat 3", "duckdb query failed on table 4: row 77", "resource exhausted [errno 28]",
    "resource exhausted [errno 12]", "[Errno 24] too many open files", "[errno 28] write failed", "errno 2 [errno 2]",
    "no space left on device 3", "5oom on node 2", "oom5 killer", "db1 lock timeout 30", "1db down", "sql9 broken",
    "dns0 lookup 8.8.8.8 failed", "gpu0 device lost 77", "cuda11 error 2", "timeout42", "http 401 unauthorized",
    "503 service unavailable", "403 forbidden", "cpu load 99 on host 3", "memory pressure 87%", "load average 12.5",
    "scheduler stalled for 30s", "config key k12 invalid", "invalid token 123abc", "import error 3 numpy",
    "worker 3 hang after 12 s", "worker w3 crashed with signal 9", "coordinator fatal 1", "assert 3 == 4",
    "x86_64 malformed 12", "12 hardware fault", "heartbeat 1 missed", "deadline exceeded 2000ms",
    "constraint 7 violated", "disk full 100%", "unreachable 10.0.0.1", "12345", "", "plain words only",
    "\u0663\u0664 out of memory", "caf\u00e9 1 timed out",
    "oom on node 2", "oom killer", "db down", "sql broken", "dns lookup failed",  # the same without the digit
]
# every component rule and operation rule, with and without a task or a worker
CONTEXTS: list[tuple[str, str, bool, bool]] = [
    (comp, op, has_task, has_worker)
    for comp in ("", "comp7", "worker", "Worker", "task", "test", "scheduler", "coordinator", "db", "system",
                 "hardware", "network")
    for op in ("", "op", "heartbeat", "Heartbeat", "task_run")
    for has_task in (False, True)
    for has_worker in (False, True)
]


def _client_response_error(status: int) -> BaseException:
    return aiohttp.ClientResponseError(None, (), status=status, message=f"status {status}")  # type: ignore[arg-type]


class CustomError(Exception):
    pass


def _errors(message: str) -> list[tuple[BaseException | None, str | None]]:
    """(exception, exception_type name) pairs for one message: a report by name, and raised ones."""
    return [
        (None, None), (None, "OSError"), (None, "ConnectionResetError"), (None, "_duckdb.IOException"),
        (None, "SomeCustomError"), (None, "ClientResponseError"), (None, "TimeoutError"),
        (RuntimeError(message), None), (CustomError(message), None), (ValueError(message), None),
        (OSError(errno.ENOSPC, message), None), (OSError(errno.ENOMEM, message), None), (OSError(message), None),
        (OSError(errno.EIO, message), None), (ConnectionResetError(errno.ECONNRESET, message), None),
        (PermissionError(message), None), (_client_response_error(401), None), (_client_response_error(403), None),
        (_client_response_error(500), None), (duckdb.IOException(message), None), (TimeoutError(message), None),
        (subprocess.TimeoutExpired(["x"], 5), None),
    ]


EXPLICIT: list[tuple[ErrorType | None, ErrorSeverity | None]] = [
    (None, None), (None, ErrorSeverity.CRITICAL), (ErrorType.DATABASE, None), (ErrorType.RESOURCE, None),
    (ErrorType.SYSTEM, ErrorSeverity.LOW), (ErrorType.NETWORK, None), (ErrorType.WORKER, ErrorSeverity.MEDIUM),
]


def _reletter(text: str, rng: random.Random) -> str:
    """``text`` with one letter changed (a keyword may stop matching, or start)."""
    at = [i for i, c in enumerate(text) if c.isalpha()]
    if not at:
        return text
    i = rng.choice(at)
    return text[:i] + rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") + text[i + 1:]


def _digit_in(text: str, rng: random.Random) -> str:
    """``text`` with a digit put in somewhere (next to a word: \\b then reads otherwise)."""
    i = rng.randrange(len(text) + 1)
    return text[:i] + rng.choice("0123456789") + text[i:]


# contexts that differ in one thing only
ALWAYS = [("comp7", "op", False, False), ("comp7", "heartbeat", False, False), ("worker", "op", False, False),
          ("comp7", "op", True, False), ("comp7", "task_run", False, False)]


def _calls() -> list[tuple[Any, ...]]:
    """Per template, its variants (other digits, another letter) each with the same exceptions,
    contexts and explicit values: what a cache keyed too coarsely would confuse."""
    rng = random.Random(11)
    out = []
    kinds = len(_errors(""))
    for template in TEMPLATES:
        variants = {template, *(_redigit(template, rng) for _ in range(4))}
        variants |= {_reletter(v, rng) for v in list(variants) for _ in range(2)}
        variants |= {re.sub(r"\d", "", template), _digit_in(template, rng), _digit_in(template, rng)}
        picked = rng.sample(range(kinds), 8)
        contexts = [*rng.sample(CONTEXTS, 2), *ALWAYS]
        explicit = rng.sample(EXPLICIT, 2)
        for text in sorted(variants):
            errors = _errors(text)
            for k in picked:
                exc, name = errors[k]
                for comp, op, has_task, has_worker in contexts:
                    for etype, sev in explicit:
                        out.append((exc, text, comp, op, name, etype, sev, has_task, has_worker))
    rng.shuffle(out)
    return out


def _classify(call: tuple[Any, ...]) -> Any:
    exc, text, comp, op, name, etype, sev, has_task, has_worker = call
    return classify(exc, text, comp, op, exception_type=name, explicit_type=etype, explicit_severity=sev,
                    has_task=has_task, has_worker=has_worker)


def test_cached_classification_is_the_computed_one() -> None:
    """Every call classified with a warm cache (filled by other digits of the same messages, other
    exceptions, other contexts) answers what it answers computed from scratch."""
    calls = _calls()
    assert len(calls) > 10_000
    expected = []
    for call in calls:
        classify_mod.CACHE.clear()
        expected.append(_classify(call))
    classify_mod.CACHE.clear()
    for _ in range(2):
        got = [_classify(call) for call in calls]
        assert got == expected
    assert classify_mod.CACHE  # the cache was used
    # the answers the digits decide differ, so a cache keyed too coarsely would have been caught
    assert classify(None, "resource exhausted [errno 28]").category != \
        classify(None, "resource exhausted [errno 12]").category
    assert classify(_client_response_error(401), "x").category != classify(_client_response_error(403), "x").category


def test_classification_cache_overflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classify_mod.CACHE, "max_entries", 5)
    classify_mod.CACHE.clear()
    calls = _calls()[:3000]
    got = [_classify(call) for call in calls]
    for call, answer in zip(calls, got, strict=True):
        classify_mod.CACHE.clear()
        assert _classify(call) == answer
    assert len(classify_mod.CACHE) <= 5


# -- identify: classification and fingerprint remembered together -------------------------------
def _identify_call(call: tuple[Any, ...]) -> tuple[Any, str]:
    exc, text, comp, op, name, etype, sev, has_task, has_worker = call
    exc_type = name if exc is None else type(exc).__name__  # as ErrorHandler.prepare passes it
    return identify_mod.identify(exc, text, comp, op, exc_type, etype, sev, has_task, has_worker)


def _identify_plain(call: tuple[Any, ...]) -> tuple[Any, str]:
    """What identify must answer, from the uncached classification and the reference masking."""
    exc, text, comp, op, name, etype, sev, has_task, has_worker = call
    exc_type = name if exc is None else type(exc).__name__
    classify_mod.CACHE.clear()
    cls = classify(exc, text, comp, op, exception_type=exc_type, explicit_type=etype, explicit_severity=sev,
                   has_task=has_task, has_worker=has_worker)
    key = "\x1f".join((cls.error_type.value, cls.category.value, comp, op, exc_type or "", reference_normalize(text)))
    return cls, hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=16).hexdigest()


def _identify_calls() -> list[tuple[Any, ...]]:
    """The classification calls, and corpus messages (hex, addresses, paths, digits of every
    length) each with its digits changed: what a cache keyed too coarsely would confuse."""
    rng = random.Random(5)
    calls = _calls()[:6000]
    for text in corpus(400, seed=9):
        for variant in {text, *(_redigit(text, rng) for _ in range(3))}:
            for comp, op, has_task, has_worker in ALWAYS[:3]:
                calls.append((None, variant, comp, op, None, None, None, has_task, has_worker))
    rng.shuffle(calls)
    return calls


def test_identify_is_classify_and_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call identified with a warm cache (other digits of the same messages, other
    exceptions, contexts and explicit values) answers what the plain computations answer; the
    same with a cache that overflows all the time."""
    calls = _identify_calls()
    assert len(calls) > 8_000
    expected = [_identify_plain(call) for call in calls]
    for cap in (identify_mod.KNOWN.max_entries, 7):
        monkeypatch.setattr(identify_mod.KNOWN, "max_entries", cap)
        identify_mod.KNOWN.clear()
        for _ in range(2):
            got = [_identify_call(call) for call in calls]
            assert got == expected
        assert 0 < len(identify_mod.KNOWN) <= cap  # it was used, within its bound


def test_identify_keeps_no_long_texts_and_no_line_twice() -> None:
    identify_mod.KNOWN.clear()
    group_mod.LINES.clear()
    long_text = "connection refused by peer " + "x" * 10_000
    first = identify_mod.identify(None, long_text, "net", "op", None, None, None, False, False)
    assert not identify_mod.KNOWN
    assert identify_mod.identify(None, long_text, "net", "op", None, None, None, False, False) == first
    # a message it keeps is not kept by normalize_message's cache of lines as well
    identify_mod.identify(None, "task 12 timed out after 3s", "comp", "op", None, None, None, False, False)
    assert len(identify_mod.KNOWN) == 1
    assert len(group_mod.LINES) == 1  # the long text's line only: nothing kept it otherwise
    # one whose classification reads a digit is not kept here, so its line is kept there
    identify_mod.identify(None, "resource exhausted [errno 28]", "comp", "op", None, None, None, False, False)
    assert len(identify_mod.KNOWN) == 1
    assert len(group_mod.LINES) == 2


def test_a_bounded_cache_starts_over_at_either_bound() -> None:
    cache: BoundedCache[int, str] = BoundedCache(3, 100)
    for k in range(3):
        cache.put(k, "v", 10)
    assert len(cache) == 3 and cache.size == 30
    cache.put(3, "v", 10)  # a fourth entry: over the entries
    assert dict(cache) == {3: "v"} and cache.size == 10
    cache.put(4, "v", 95)  # 105 bytes: over the budget
    assert dict(cache) == {4: "v"} and cache.size == 95
    cache.clear()
    assert not cache and cache.size == 0


def test_the_caches_keep_within_their_memory_budgets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long messages (up to the length the caches take) fill them by bytes before entries: each
    starts over when its estimate passes its budget, and answers stay those computed."""
    monkeypatch.setattr(classify_mod.CACHE, "budget", 100_000)
    monkeypatch.setattr(identify_mod.KNOWN, "budget", 100_000)
    classify_mod.CACHE.clear()
    identify_mod.KNOWN.clear()
    texts = [f"task {i} timed out " + "".join(chr(97 + (i >> k) % 26) for k in range(12)) * 75 for i in range(300)]
    assert all(900 < len(t) < 1000 for t in texts)
    for t in texts:
        cls, fp = identify_mod.identify(None, t, "comp", "op", None, None, None, False, False)
        assert (cls, fp) == _identify_plain((None, t, "comp", "op", None, None, None, False, False))
        assert len(classify_mod.CACHE) <= 100_000 // 900 + 1
        assert len(identify_mod.KNOWN) <= 100_000 // 900 + 1
    assert classify_mod.CACHE and identify_mod.KNOWN


# -- records and metrics -------------------------------------------------------------------------
def test_occurrence_record_of_is_the_constructed_record() -> None:
    report = ErrorReport("e1", ErrorType.NETWORK, ErrorSeverity.LOW, "m",
                         ErrorContext(worker_id="w", task_id="t", hardware_id="h"))
    md = {"a": [1, 2]}
    rec = OccurrenceRecord.of(report, "msg", md)
    assert rec == OccurrenceRecord("e1", report.last_seen, "msg", "w", "t", "h", {"a": [1, 2]})
    assert rec.metadata is not md  # a copy, as before
    assert OccurrenceRecord.of(report, "msg", None).metadata is None
    assert OccurrenceRecord.of(report, "msg", {}).metadata is None
    with pytest.raises(AttributeError):
        rec.message = "other"  # type: ignore[misc]


def test_group_record_of_is_the_constructed_record() -> None:
    report = ErrorReport("e1", ErrorType.NETWORK, ErrorSeverity.LOW, "m",
                         ErrorContext(component="c", worker_id="w", metadata={"k": [1]}), exception_type="E",
                         recovery_details={"tried": ["retry"], "_operation": object()}, aggregated_count=3)
    rec = GroupRecord.of(report)
    c = report.context
    assert rec == GroupRecord(
        "e1", "", ErrorType.NETWORK, ErrorSeverity.LOW, ErrorCategory.UNKNOWN, "m", "c", "unknown", "w", None, None,
        "E", None, {"k": [1]}, report.first_seen, report.last_seen, 3, 0, None, ResolutionStatus.OPEN, None, None,
        0, 1, {"tried": ["retry"]}, False)
    assert rec.metadata is not c.metadata  # a snapshot, as before
    with pytest.raises(AttributeError):
        rec.message = "other"  # type: ignore[misc]


async def test_errors_metric_is_what_a_prometheus_counter_exposes(tmp_path: Path) -> None:
    """The per-report count is a dict read at scrape time; /metrics shows what the Counter it
    replaced showed for the same reports (created timestamps aside), and counts every report."""
    integ = EnhancedErrorHandlingIntegration(None, validate_config(
        {"database": str(tmp_path / "m.duckdb"), "auto_recover": False, "metrics": True}))
    await integ.start()
    try:
        reg = CollectorRegistry()
        counter = Counter("error_handling_errors", "Errors reported", ["error_type", "severity"], registry=reg)
        texts = ["Connection reset 3", "task 4 timed out", "worker lost heartbeat", "duckdb query failed", "boom"]
        for i in range(200):
            r = await integ.report_error(texts[i % 5], {"critical": i % 7 == 0})
            counter.labels(r.error_type.value, r.error_severity.value).inc()  # as of this report
        assert integ.metrics is not None
        ours = integ.metrics.render().decode()
        theirs = generate_latest(reg).decode()

        def errors_lines(text: str) -> list[str]:
            return [re.sub(r"(_created\{.*\}) \S+", r"\1 T", line) for line in text.splitlines()
                    if "error_handling_errors" in line]

        assert errors_lines(ours) == errors_lines(theirs)
        totals = [float(line.rsplit(" ", 1)[1]) for line in ours.splitlines()
                  if line.startswith("error_handling_errors_total{")]
        assert sum(totals) == 200
        created = [float(line.rsplit(" ", 1)[1]) for line in ours.splitlines()
                   if line.startswith("error_handling_errors_created{")]
        assert created and all(abs(c - time.time()) < 600 for c in created)
    finally:
        await integ.stop()


def test_classification_cache_keeps_no_long_texts() -> None:
    """Long messages are classified (the same way) without entering the cache: its keys stay
    small whatever a client sends (a 1 MB body per report would otherwise pin up to 32 GB)."""
    from coordinator_plugins.error_handling.intake import classify as mod

    mod.CACHE.clear()
    long_text = "connection refused by peer " + "x" * 100_000
    first = mod.classify(None, long_text, "net", "op")
    assert not mod.CACHE
    assert mod.classify(None, long_text, "net", "op") == first
    assert first.category == mod.classify(None, "connection refused by peer", "net", "op").category
    assert len(mod.CACHE) == 1
