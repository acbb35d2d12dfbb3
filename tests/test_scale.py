"""Issue 18: grouping stays exact past max_groups_in_memory (and after a restart), diagnostics
read counters that agree with the groups, and keyset paging returns every group exactly once
while groups are being added."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration, validate_config

CAP = 100  # the smallest max_groups_in_memory the config accepts
GROUPS = 3 * CAP


def message(g: int) -> str:
    tag = "".join(chr(97 + (g // 26**k) % 26) for k in range(3))  # letters: never masked as a number
    return f"Connection reset by peer at 10.0.{g % 7}.1:5432 [kind {tag}]"


def context(g: int, critical: bool = False) -> dict[str, Any]:
    ctx: dict[str, Any] = {"component": f"comp{g % 5}", "operation": "op"}
    if critical:
        ctx["severity"] = "critical"
    return ctx


async def started(db: Path, **extra: Any) -> EnhancedErrorHandlingIntegration:
    integ = EnhancedErrorHandlingIntegration(None, validate_config(
        {"database": str(db), "auto_recover": False, "max_groups_in_memory": CAP, **extra}))
    await integ.start()
    return integ


async def stored_groups(integ: EnhancedErrorHandlingIntegration) -> dict[str, tuple[str, int, str, str]]:
    """fingerprint-free view of every stored group: error_id -> (message, count, status, severity)."""
    await integ.flush()
    rows = await integ.store.read(lambda cur: cur.execute(
        "SELECT error_id, message, aggregated_count, resolution_status, error_severity FROM error_reports"
    ).fetchall())
    return {r[0]: (r[1], int(r[2]), r[3], r[4]) for r in rows}


async def test_grouping_is_exact_with_three_times_more_groups_than_the_cap(tmp_path: Path) -> None:
    db = tmp_path / "errors.duckdb"
    integ = await started(db)
    ids: dict[int, str] = {}
    for rnd in range(3):  # round-robin: every group is evicted before it recurs
        for g in range(GROUPS):
            report = await integ.report_error(message(g), context(g))
            assert ids.setdefault(g, report.error_id) == report.error_id, f"group {g} split"
        if rnd == 1:  # once the writer let go of the evicted groups, they come from the store
            await integ.flush()
            gc.collect()
    # a burst of misses for the same evicted fingerprint must not open two groups
    burst = await asyncio.gather(*(integ.report_error(message(g), context(g)) for g in (0, 1) for _ in range(5)))
    assert {r.error_id for r in burst} == {ids[0], ids[1]}
    h = integ.error_handler
    assert len(h.groups) <= CAP and h.groups.evicted > 0 and h.lookups > 0
    groups = await stored_groups(integ)
    assert len(groups) == GROUPS
    expected = {ids[g]: 3 + (5 if g in (0, 1) else 0) for g in range(GROUPS)}
    assert {e: v[1] for e, v in groups.items()} == expected
    metrics = await integ.get_error_metrics()
    assert metrics["open_groups"] == GROUPS and metrics["total_errors"] == 3 * GROUPS + 10
    await integ.stop()

    # after a restart: the groups not loaded into memory are found in the store
    integ = await started(db)
    assert (await integ.get_error_metrics())["open_groups"] == GROUPS
    for _ in range(2):
        for g in reversed(range(GROUPS)):
            report = await integ.report_error(message(g), context(g))
            assert report.error_id == ids[g] and not report.new_group
    groups = await stored_groups(integ)
    assert len(groups) == GROUPS
    assert {e: v[1] for e, v in groups.items()} == {e: n + 2 for e, n in expected.items()}
    await integ.stop()


async def test_an_evicted_group_resolved_then_recurring_is_a_regression(tmp_path: Path) -> None:
    integ = await started(tmp_path / "errors.duckdb")
    first = await integ.report_error(message(0), context(0))
    assert await integ.resolve_error(first.error_id, "manual")
    for g in range(1, 2 * CAP):  # the resolved group is evicted first
        await integ.report_error(message(g), context(g))
    await integ.flush()
    assert integ.error_handler.groups.evicted >= CAP
    again = await integ.report_error(message(0), context(0))
    assert again.error_id == first.error_id and again.is_regression and again.aggregated_count == 2
    await integ.stop()


async def counters_agree(integ: EnhancedErrorHandlingIntegration) -> None:
    groups = await stored_groups(integ)
    open_ = [v for v in groups.values() if v[2] != "resolved"]
    critical = [v for v in open_ if v[3] == "critical"]
    diag = await integ.run_diagnostics()
    assert diag["error_metrics"]["open_groups"] == len(open_)
    assert integ.error_handler.groups.critical_open == len(critical)
    assert (f"{len(critical)} open critical error group(s)" in diag["issues"]) == bool(critical)
    assert integ.stats_for_metrics()["open_groups"] == len(open_)


async def test_diagnostics_counters_agree_with_the_groups(tmp_path: Path) -> None:
    db = tmp_path / "errors.duckdb"
    integ = await started(db, regression_window=3600)
    ids = []
    for g in range(2 * CAP):
        ids.append((await integ.report_error(message(g), context(g, critical=g % 10 == 0))).error_id)
    await counters_agree(integ)
    for g in range(0, 2 * CAP, 3):  # resolve some, in memory or evicted
        assert await integ.resolve_error(ids[g])
    await counters_agree(integ)
    for g in range(0, 2 * CAP, 6):  # half of those regress; one group becomes critical
        await integ.report_error(message(g), context(g))
    await integ.report_error(message(1), context(1, critical=True))
    await counters_agree(integ)
    await integ.stop()
    integ = await started(db, regression_window=3600)  # restored from the store's counts
    await counters_agree(integ)
    await integ.report_error(message(4), context(4, critical=True))
    await counters_agree(integ)
    await integ.stop()


async def test_keyset_paging_returns_every_group_once_while_groups_are_added(make_farm: Any) -> None:
    farm = await make_farm(plugin={"auto_recover": False, "max_groups_in_memory": CAP})
    integ = farm.integ
    for g in range(GROUPS):
        await integ.report_error(message(g), context(g))
    await integ.flush()
    before = set(await stored_groups(integ))
    for query, want in (("status=all", before), ("status=open&component=comp2", None)):
        seen: list[str] = []
        cursor: str | None = None
        added = 0
        while True:
            path = f"/api/errors?{query}&limit=17" + (f"&cursor={cursor}" if cursor else "")
            status, body = await farm.get(path)
            assert status == 200, body
            seen.extend(item["error_id"] for item in body["errors"])
            for _ in range(3):  # new groups arrive between pages
                await integ.report_error(message(10_000 + added), context(added))
                added += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)), "a group was returned twice"
        if want is None:  # every group of comp2 that existed before the walk
            comp2 = await integ.store.read(lambda cur: {r[0] for r in cur.execute(
                "SELECT error_id FROM error_reports WHERE component = 'comp2'").fetchall()})
            want = before & comp2
            assert want and all(e in comp2 for e in seen)
        assert want <= set(seen), f"{len(want - set(seen))} group(s) never returned"
