"""Issue 18: a lookup of an evicted group waits for that group's own queued writes (its
resolution, its counts) and for nothing else in the write queue.

Real DuckDB files. The writer is held with a gate on its own ``_take`` (our code, not DuckDB's):
writes stay queued, deterministically, while the test looks groups up.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration
from coordinator_plugins.error_handling.model import utcnow
from coordinator_plugins.error_handling.storage.duckdb import DuckDBStore
from coordinator_plugins.error_handling.storage.records import LevelRecord
from tests.test_scale import CAP, GROUPS, context, message, started, stored_groups

GUARD = 60.0  # s: a hang fails the test instead of stalling the suite (never a timing assertion)


def writer_held(store: Any) -> contextlib.AbstractContextManager[threading.Event]:
    """While inside, the store's writer commits nothing (the writes stay queued); set the event
    it yields, or leave the block, to let it go. Entered once no batch of the writer's is in
    flight: a write queued by background work just before would move the counts the test compares."""
    assert isinstance(store, DuckDBStore)
    return store.writer.held(GUARD)


@contextlib.asynccontextmanager
async def running(db: Path, **extra: Any) -> AsyncIterator[EnhancedErrorHandlingIntegration]:
    """A started integration, stopped when the block is left however it is left (a failed test
    must not leave its writer, and the switch interval it set, to the tests after it)."""
    integ = await started(db, **extra)
    try:
        yield integ
    finally:
        await integ.stop()


def needs_lookup(integ: EnhancedErrorHandlingIntegration, g: int) -> bool:
    h = integ.error_handler
    return h.groups.lookup_needed(h.prepare(message(g), context(g)).fp)


async def evict_all_but_new(integ: EnhancedErrorHandlingIntegration, start: int) -> None:
    """Report CAP groups never seen (from ``start``): every earlier group is evicted."""
    for g in range(start, start + CAP):
        await integ.report_error(message(g), context(g))


async def test_a_lookup_waits_for_an_evicted_groups_queued_resolution(tmp_path: Path) -> None:
    async with running(tmp_path / "errors.duckdb") as integ:
        h = integ.error_handler
        first = await integ.report_error(message(0), context(0))
        await integ.flush()  # its row is in the store: only what follows is queued
        with writer_held(integ.store) as release:
            first.resolve("restart_worker")  # as a recovery's outcome does: queued, not waited for
            h.persist(first)
            await evict_all_but_new(integ, 1)  # resolved groups go first
            first_id = first.error_id
            del first  # nothing holds it any more: it must come from the store
            gc.collect()
            assert h.groups.get(first_id) is None and needs_lookup(integ, 0)
            again = asyncio.ensure_future(integ.report_error(message(0), context(0)))
            for _ in range(20):
                await asyncio.sleep(0.01)
            done_while_held = again.done()
            release.set()
            report = await asyncio.wait_for(again, GUARD)
        # found resolved (the queued resolution was in its row), so this occurrence is a regression
        assert report.error_id == first_id and report.is_regression and report.aggregated_count == 2
        assert not done_while_held and h.stored.waits == 1  # it waited for that resolution's commit
        groups = await stored_groups(integ)
        assert groups[first_id][1:3] == (2, "open")
        assert len(groups) == CAP + 1


async def test_a_lookup_does_not_wait_for_unrelated_queued_writes(tmp_path: Path) -> None:
    async with running(tmp_path / "errors.duckdb") as integ:
        store = integ.store
        assert isinstance(store, DuckDBStore)
        h = integ.error_handler
        ids = [(await integ.report_error(message(g), context(g))).error_id for g in range(GROUPS)]
        await integ.flush()
        gc.collect()  # nothing holds the evicted groups: they come from the store
        with writer_held(store):
            for g in range(GROUPS, GROUPS + 5):  # unrelated writes, queued and held
                await integ.report_error(message(g), context(g))
            forced = store.durability.forced
            pending = store.status().pending_writes
            assert pending >= 5
            for g in range(10):  # evicted long ago: their rows are current
                assert needs_lookup(integ, g)
                report = await asyncio.wait_for(integ.report_error(message(g), context(g)), GUARD)
                assert report.error_id == ids[g] and report.aggregated_count == 2 and not report.new_group
            # every lookup read the store while the unrelated writes were still queued
            assert h.stored.lookups == 10 and h.stored.waits == 0
            assert store.durability.forced == forced  # no flush was asked for
            assert store.status().pending_writes == pending + 10
        groups = await stored_groups(integ)
        assert len(groups) == GROUPS + 5
        assert [groups[ids[g]][1] for g in range(GROUPS)] == [2] * 10 + [1] * (GROUPS - 10)


async def test_counts_are_exact_past_the_cap_with_resolves_of_evicted_groups(tmp_path: Path) -> None:
    """Round-robin over three times the cap; between rounds some groups are resolved (by hand,
    durably; or as a recovery does, queued only) and evicted again before they recur."""
    for window in (3600.0, 0.0):  # a recurrence after a resolution: a regression, or a new group
        db = tmp_path / f"errors-{window:g}.duckdb"
        async with running(db, regression_window=window, verify_window=window) as integ:
            h = integ.error_handler
            current: dict[int, str] = {}  # fingerprint -> its current group
            counts: dict[str, int] = {}
            regressed: dict[str, int] = {}
            resolved: set[int] = set()
            for rnd in range(4):
                for g in range(GROUPS):
                    report = await integ.report_error(message(g), context(g))
                    if g in resolved:  # recurs after its resolution
                        resolved.discard(g)
                        if window:
                            assert report.error_id == current[g] and report.is_regression, (rnd, g)
                            regressed[report.error_id] = regressed.get(report.error_id, 0) + 1
                        else:
                            assert report.new_group and current[g] in report.related_errors, (rnd, g)
                            current[g] = report.error_id
                    else:
                        assert report.error_id == current.setdefault(g, report.error_id), (rnd, g)
                    counts[report.error_id] = counts.get(report.error_id, 0) + 1
                    if g % 7 == rnd:  # resolved as a recovery would: queued, then evicted first
                        report.resolve("retry")
                        h.persist(report)
                        resolved.add(g)
                for g in range(rnd, GROUPS, 11):  # resolved by hand while evicted (loaded, resolved)
                    if g not in resolved:
                        assert await integ.resolve_error(current[g]) is True
                        resolved.add(g)
                if rnd == 1:
                    gc.collect()
            assert h.groups.evicted > 0 and h.stored.lookups > 0
            groups = await stored_groups(integ)
            assert {e: v[1] for e, v in groups.items()} == counts
            assert sum(counts.values()) == 4 * GROUPS
            status = {e: v[2] for e, v in groups.items()}
            for g in range(GROUPS):
                assert (status[current[g]] == "resolved") == (g in resolved), g
            if window:
                assert len(groups) == GROUPS
                stored = {e: await integ.store.get_group(e) for e in regressed}
                assert {e: r.regression_count for e, r in stored.items() if r is not None} == regressed
            metrics = await integ.get_error_metrics()
            assert metrics["open_groups"] == sum(1 for v in status.values() if v != "resolved")


async def test_levels_come_back_with_a_batch_of_looked_up_groups(tmp_path: Path) -> None:
    db = tmp_path / "errors.duckdb"
    async with running(db) as integ:
        ids = [(await integ.report_error(message(g), context(g))).error_id for g in range(GROUPS)]
        for g in range(0, 20, 2):
            integ.store.save_recovery_level(LevelRecord(ids[g], 3, utcnow(), ({"level": 2, "ok": False},)))
    async with running(db) as integ:  # the oldest groups and their levels stay in the store
        levels = integ.recovery_manager.levels
        assert not any(ids[g] in levels for g in range(20))
        burst = await asyncio.gather(*(integ.report_error(message(g), context(g)) for g in range(20)))
        assert [r.error_id for r in burst] == ids[:20]
        stored = integ.error_handler.stored
        assert stored.lookups == 20 and stored.queries < 20  # batched
        assert {g: levels[ids[g]].level for g in range(20) if ids[g] in levels} == {g: 3 for g in range(0, 20, 2)}
        assert all(len(levels[ids[g]].history) == 1 for g in range(0, 20, 2))
