"""A restart after a flood of unique errors: startup loads the newest groups within DuckDB's
memory_limit (a top-N of whole rows over 100,000 groups, with their stack traces and metadata, ran
out of the default 64 MB, so the coordinator could not start again after bench_flood)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration, validate_config
from coordinator_plugins.error_handling.model import (
    ErrorCategory,
    ErrorContext,
    ErrorReport,
    ErrorSeverity,
    ErrorType,
)
from coordinator_plugins.error_handling.storage.records import GroupQuery, GroupRecord, OccurrenceRecord

GROUPS = 100_000


def flood(start: datetime) -> tuple[list[GroupRecord], list[OccurrenceRecord]]:
    """Groups as a flood of unique errors leaves them: one occurrence each, a stack trace and
    metadata apiece (what made whole rows heavy)."""
    stack = "Traceback (most recent call last):\n" + "  File \"/srv/app/worker.py\", line 42, in run\n" * 6
    groups, occ = [], []
    for g in range(GROUPS):
        t = start + timedelta(milliseconds=g)
        text = f"unique failure number {g} on shard {g % 97}"
        report = ErrorReport(
            error_id=f"{g:032x}", error_type=ErrorType.SYSTEM, error_severity=ErrorSeverity.MEDIUM, message=text,
            context=ErrorContext(component=f"comp{g % 40}", operation="op", timestamp=t, stack_trace=stack,
                                 metadata={"shard": g % 97, "note": "x" * 64}),
            category=ErrorCategory.COORDINATOR_ERROR, fingerprint=f"{g:032x}", first_seen=t, last_seen=t)
        groups.append(GroupRecord.of(report))
        occ.append(OccurrenceRecord(report.error_id, t, text, "w0"))
    return groups, occ


async def test_restart_after_a_flood_of_unique_groups_starts_within_the_memory_limit(tmp_path: Path) -> None:
    db = str(tmp_path / "flood.duckdb")
    cfg = validate_config({"database": db, "auto_recover": False})  # the default memory limit
    loader = EnhancedErrorHandlingIntegration(None, cfg)
    await loader.store.open()
    groups, occ = flood(datetime.now(UTC) - timedelta(minutes=5))
    await loader.store.bulk_load(groups, occ)  # type: ignore[attr-defined]  # DuckDB's bulk path
    await loader.store.close()
    del groups, occ

    integ = EnhancedErrorHandlingIntegration(None, cfg)
    await integ.start()  # before the fix: duckdb.OutOfMemoryException here
    try:
        totals = await integ.store.totals()
        assert (totals.groups, totals.aggregated) == (GROUPS, GROUPS)
        assert integ.error_handler.groups.count_open() == GROUPS  # every open group counted, loaded or not
        newest = f"{GROUPS - 1:032x}"
        assert integ.error_handler.groups.get(newest) is not None  # the newest are the ones in memory
        first = await integ.store.list_groups(GroupQuery("all", limit=5))
        assert [item["error_id"] for item in first.items][:1] == [newest]
    finally:
        await integ.stop()
