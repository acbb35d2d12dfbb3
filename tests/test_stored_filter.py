"""Issue 26 item 3 (last part): the fingerprints of stored groups that are not in memory cost a few
bytes each, at startup and after, not a Python set of them all; grouping stays exact when the
filter that holds them answers "maybe" to everything (its false positives only cost lookups).

Real DuckDB files, real integrations; memory is counted by tracemalloc (Python's allocations, the
same on every run: no timing, no RSS)."""

from __future__ import annotations

import gc
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration, validate_config
from coordinator_plugins.error_handling.model import ErrorCategory, ErrorContext, ErrorReport, ErrorSeverity, ErrorType
from coordinator_plugins.error_handling.storage.records import GroupRecord, OccurrenceRecord, StoredFingerprints
from tests.test_scale import CAP, GROUPS, context, message, started, stored_groups


def test_the_filter_never_forgets_a_fingerprint_and_rarely_invents_one() -> None:
    s = StoredFingerprints(1000)  # sized for fewer than it gets: it grows by layers
    added = [f"fp-{i}" for i in range(50_000)]
    s.update(added)
    assert len(s) == 50_000 and s.layers > 1
    assert all(fp in s for fp in added)  # no false negative, ever
    wrong = sum(f"other-{i}" in s for i in range(50_000))
    assert wrong < 1000  # under 2% over seven layers (each a lookup that finds nothing)
    assert s.nbytes < 6 * 50_000  # a few bytes a fingerprint, not a set's hundreds
    assert "" not in StoredFingerprints() and 3 not in s


def test_a_filter_sized_for_its_fingerprints_is_two_bytes_each() -> None:
    s = StoredFingerprints(50_000)  # as a startup sizes it: for the stored groups left out
    s.update(f"{i * 7919:032x}" for i in range(50_000))  # counters, not hashes: they spread too
    assert s.layers == 1 and s.nbytes == 2 * 50_000
    assert all(f"{i * 7919:032x}" in s for i in range(50_000))
    assert sum(f"{i * 7919 + 1:032x}" in s for i in range(50_000)) < 500  # under 1%


def test_a_merged_filter_holds_both_and_keeps_filling_its_own_layer() -> None:
    a, b = StoredFingerprints(10), StoredFingerprints(10)
    a.update(f"a{i}" for i in range(5))
    b.update(f"b{i}" for i in range(30))
    a.merge(b)
    a.update(f"c{i}" for i in range(30))
    assert len(a) == 65 and all(fp in a for p in "abc" for fp in (f"{p}{i}" for i in range(5)))
    assert all(f"c{i}" in a and f"b{i}" in a for i in range(30))


def saturated() -> StoredFingerprints:
    """A filter of one word, never grown, every bit set: "maybe" for any fingerprint."""
    s = StoredFingerprints(1, bits_per_item=1, grow=False)
    s.update(f"x{i}" for i in range(2000))
    assert all(f"never-added-{i}" in s for i in range(100))
    return s


async def test_grouping_stays_exact_when_every_fingerprint_is_a_false_positive(tmp_path: Path) -> None:
    db = tmp_path / "errors.duckdb"
    integ = await started(db)
    ids = [(await integ.report_error(message(g), context(g))).error_id for g in range(GROUPS)]
    await integ.stop()
    integ = await started(db)  # the newest CAP groups in memory, the others in the filter
    try:
        h = integ.error_handler
        h.groups.stored = saturated()
        lookups = h.stored.lookups
        # the stored groups join theirs; as many new ones each open one group, once
        again = [(await integ.report_error(message(g), context(g))).error_id for g in range(2 * GROUPS)]
        assert again[:GROUPS] == ids and len(set(again)) == 2 * GROUPS
        assert h.stored.lookups - lookups >= 2 * GROUPS - CAP  # the false positives were looked up
        for g in range(GROUPS, 2 * GROUPS):  # and the new groups, evicted meanwhile, are found again
            await integ.report_error(message(g), context(g))
        groups = await stored_groups(integ)
        assert len(groups) == 2 * GROUPS and all(v[1] == 2 for v in groups.values())
        assert h.groups.count_open() == 2 * GROUPS
    finally:
        await integ.stop()


async def test_groups_evicted_again_and_again_do_not_grow_the_filter(tmp_path: Path) -> None:
    integ = await started(tmp_path / "errors.duckdb")
    try:
        for _ in range(4):  # round-robin over three times the cap: each round evicts every group
            for g in range(GROUPS):
                await integ.report_error(message(g), context(g))
        h = integ.error_handler
        assert h.groups.evicted >= 3 * (GROUPS - CAP)
        assert len(h.groups.stored) <= GROUPS  # one entry a group, not one an eviction
        assert len(await stored_groups(integ)) == GROUPS
    finally:
        await integ.stop()


def many(n: int) -> tuple[list[GroupRecord], list[OccurrenceRecord]]:
    start = datetime.now(UTC) - timedelta(hours=1)
    groups, occ = [], []
    for g in range(n):
        t = start + timedelta(milliseconds=g)
        report = ErrorReport(
            error_id=f"{g:032x}", error_type=ErrorType.SYSTEM, error_severity=ErrorSeverity.MEDIUM,
            message=f"failure {g}", context=ErrorContext(component="c", operation="op", timestamp=t),
            category=ErrorCategory.COORDINATOR_ERROR, fingerprint=f"{g:032x}", first_seen=t, last_seen=t)
        groups.append(GroupRecord.of(report))
        occ.append(OccurrenceRecord(report.error_id, t, report.message, "w0"))
    return groups, occ


async def startup_memory(db: Path, n: int) -> tuple[int, int]:
    """(retained, peak) bytes Python allocated by a start over ``n`` stored groups (CAP in memory)."""
    cfg = validate_config({"database": str(db), "auto_recover": False, "max_groups_in_memory": CAP})
    loader = EnhancedErrorHandlingIntegration(None, cfg)
    await loader.store.open()
    groups, occ = many(n)
    await loader.store.bulk_load(groups, occ)  # type: ignore[attr-defined]  # DuckDB's bulk path
    await loader.store.close()
    del groups, occ, loader
    gc.collect()
    integ = EnhancedErrorHandlingIntegration(None, cfg)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        await integ.start()
        gc.collect()
        now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    try:
        assert integ.error_handler.groups.lookup_needed(f"{0:032x}")  # the oldest: stored, not in memory
        assert len(integ.error_handler.groups) == CAP
    finally:
        await integ.stop()
    return now - before, peak - before


async def test_startup_memory_is_a_few_bytes_per_stored_group_not_in_memory(tmp_path: Path) -> None:
    """Before: a set of every such group's fingerprint (and a list of them on the way), 90 bytes
    a group retained and 147 at the peak (Python's allocations); now 2 bytes retained, and the
    rows are read in parts of constant size. The margin is wide: 16 and 32 bytes a group."""
    small, large = 20_000, 80_000  # both past a part of rows read at a time (8,192)
    kept0, peak0 = await startup_memory(tmp_path / "small.duckdb", small)
    kept1, peak1 = await startup_memory(tmp_path / "large.duckdb", large)
    per_kept, per_peak = (kept1 - kept0) / (large - small), (peak1 - peak0) / (large - small)
    assert per_kept < 16, (per_kept, kept0, kept1)
    assert per_peak < 32, (per_peak, peak0, peak1)
