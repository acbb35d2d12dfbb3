"""Issue 14: the contract every store implementation keeps (``storage/base.py``).

Each test runs against every kind in ``store_harness.STORE_KINDS`` (real storage: a DuckDB file
in a temp dir; PostgreSQL once it is registered there). Records are made as the plugin makes
them: snapshots of live reports, taken before the write is queued.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from coordinator_plugins.error_handling.model import (
    ErrorCategory,
    ErrorContext,
    ErrorReport,
    ErrorSeverity,
    ErrorType,
    utcnow,
)
from coordinator_plugins.error_handling.storage.base import SchemaTooNew, Store, StoreClosed
from coordinator_plugins.error_handling.storage.records import (
    GroupQuery,
    GroupRecord,
    LearnerRecord,
    LevelRecord,
    OccurrenceRecord,
    StrategyRun,
    StrategyScore,
    TimeoutRecord,
)
from tests.store_harness import KINDS, PREVIOUS_GROUP, STORE_KINDS


@pytest.fixture(params=STORE_KINDS)
def kind(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    k = KINDS[request.param](tmp_path)
    yield k
    k.cleanup()


@pytest.fixture
async def store(kind: Any) -> AsyncIterator[Store]:
    s = kind.new()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


class Group:
    """A live report and the writes the plugin would queue for it."""

    _n = 0

    def __init__(self, message: str | None = None, **fields: Any) -> None:
        Group._n += 1
        now = fields.pop("at", None) or utcnow()
        self.report = ErrorReport(
            error_id=f"{random.getrandbits(128):032x}", error_type=ErrorType.NETWORK,
            error_severity=ErrorSeverity.MEDIUM, message=message or f"peer reset {Group._n}",
            context=ErrorContext(component="w", operation="send", worker_id="w1", metadata={"n": Group._n}),
            category=ErrorCategory.CONNECTION, fingerprint=f"fp{Group._n}", first_seen=now, last_seen=now, **fields,
        )

    @property
    def id(self) -> str:
        return self.report.error_id

    def occur(self, store: Store, message: str = "again", changed: bool = False) -> int:
        """One more occurrence, as the handler records it."""
        r = self.report
        if r.persisted:
            r.aggregated_count += 1
            r.last_seen = max(utcnow(), r.last_seen + timedelta(microseconds=1))
        occ = OccurrenceRecord.of(r, message, {"attempt": r.aggregated_count})
        seq = store.record_occurrence(occ, GroupRecord.of(r) if changed or not r.persisted else None)
        r.persisted = True
        return seq

    def save(self, store: Store) -> int:
        seq = store.save_group(GroupRecord.of(self.report))
        self.report.persisted = True
        return seq


def run(error_id: str, ok: bool = True, level: int = 1) -> StrategyRun:
    return StrategyRun("retry", "Retry", "network", 0.25, ok, affected_tasks=1, recovered_tasks=int(ok),
                       impact_score=0.1, stability_score=0.9, outcome="success" if ok else "failure",
                       error_id=error_id, level=level, context={"why": "test"})


# -- migrations -------------------------------------------------------------------------------------
async def test_new_storage_is_created_at_the_current_schema_version(kind: Any, store: Store) -> None:
    assert store.status().schema_version == kind.version and store.status().ok
    assert (await store.totals()).groups == 0


async def test_storage_of_the_previous_release_is_upgraded_in_place(kind: Any) -> None:
    kind.write_previous_layout()
    store = kind.new()
    await store.open()
    try:
        assert store.status().schema_version == kind.version
        g = await store.get_group(PREVIOUS_GROUP)
        assert g is not None and g.aggregated_count == 7 and g.error_type is ErrorType.NETWORK
        assert g.metadata == {"k": 1} and g.recovery_level == 2
        state = await store.load_state(600, 1000)
        assert [x.error_id for x in state.groups] == [PREVIOUS_GROUP] and state.skipped == 0
        assert [(lv.error_id, lv.level, list(lv.history)) for lv in state.levels] == [
            (PREVIOUS_GROUP, 2, [{"level": 1, "ok": False}])]
        assert [(t.error_type, t.strategy_id, t.timeout) for t in state.timeouts] == [("network", "retry", 4.5)]
        assert len(await store.occurrences(PREVIOUS_GROUP)) == 7
        await store.wait_durable(store.record_strategy_run(run(PREVIOUS_GROUP)), 10)  # ids go on
        assert len(await store.strategy_runs(PREVIOUS_GROUP)) == 2
    finally:
        await store.close()
    again = kind.new()  # opening it again changes nothing
    await again.open()
    try:
        assert again.status().schema_version == kind.version
        assert (await again.totals()).occurrences == 7 and (await again.totals()).strategy_runs == 2
    finally:
        await again.close()


async def test_storage_newer_than_the_code_is_refused(kind: Any) -> None:
    kind.write_newer_schema(kind.version + 1)
    store = kind.new()
    with pytest.raises(SchemaTooNew, match=f"schema version {kind.version + 1}"):
        await store.open()
    await store.close()  # nothing was left open


# -- durability --------------------------------------------------------------------------------------
async def test_a_waiter_is_released_only_when_its_own_rows_are_committed(kind: Any, store: Store) -> None:
    first = Group()
    await store.wait_durable(first.occur(store), 10)
    assert (await store.get_group(first.id)) is not None  # committed before the wait returned
    kind.break_link(store)
    second = Group()
    seq = second.occur(store)
    with pytest.raises(TimeoutError):
        await store.wait_durable(seq, 0.3)  # not committed: never released as if it were
    waits = [asyncio.ensure_future(store.wait_durable(Group().occur(store), 60)) for _ in range(20)]
    await asyncio.sleep(0.2)
    assert not any(w.done() for w in waits)
    await kind.heal(store)
    await asyncio.wait_for(asyncio.gather(*waits), 30)
    await store.wait_durable(seq, 30)
    got = await store.get_group(second.id)
    assert got is not None and got.aggregated_count == 1


async def test_flush_has_a_deadline_and_commits_everything_queued(kind: Any, store: Store) -> None:
    g = Group()
    await store.wait_durable(g.occur(store), 10)
    kind.break_link(store)
    for _ in range(5):
        g.occur(store)
    with pytest.raises(TimeoutError):
        await store.flush(0.3)
    await kind.heal(store)
    await store.flush(30)
    stored = await store.get_group(g.id)
    assert stored is not None and stored.aggregated_count == 6  # lazily written group rows too


async def test_flush_through_a_write_number_waits_for_that_write_and_no_later_one(kind: Any, store: Store) -> None:
    g = Group()
    g.occur(store)
    for _ in range(4):
        seq = g.occur(store)  # counts of a group the store has: its row may be written lazily
    await store.flush(10, seq=seq)
    assert store.committed_seq() >= seq
    stored = await store.get_group(g.id)
    assert stored is not None and stored.aggregated_count == 5  # its row has them: a read sees them
    kind.break_link(store)
    later = Group().occur(store)
    await store.flush(10, seq=seq)  # committed already: returns though the later write cannot commit
    assert store.committed_seq() < later
    with pytest.raises(TimeoutError):
        await store.flush(0.3, seq=later)
    await kind.heal(store)
    await store.flush(30, seq=later)
    assert store.committed_seq() >= later


# -- exact counts ----------------------------------------------------------------------------------
async def test_counts_are_exact_under_concurrent_increments(store: Store) -> None:
    groups = [Group() for _ in range(5)]

    async def reporter(k: int) -> list[int]:
        seqs = []
        for i in range(50):
            g = groups[(k + i) % len(groups)]
            seqs.append(g.occur(store, changed=(i % 17 == 0)))
            if i % 10 == 0:
                g.report.retry_count += 1
                seqs.append(g.save(store))  # a state change never touches the count
            if i % 7 == 0:
                await asyncio.sleep(0)
        return seqs

    seqs = [s for part in await asyncio.gather(*(reporter(k) for k in range(20))) for s in part]
    await asyncio.gather(*(store.wait_durable(s, 30) for s in seqs))
    await store.flush(30)
    for g in groups:
        stored = await store.get_group(g.id)
        assert stored is not None and stored.aggregated_count == g.report.aggregated_count == 200
        assert stored.last_seen == g.report.last_seen and stored.retry_count == g.report.retry_count
        assert len(await store.occurrences(g.id, 10_000)) == 200
    totals = await store.totals()
    assert (totals.groups, totals.occurrences, totals.aggregated) == (5, 1000, 1000)


async def test_two_writers_of_one_group_never_lose_each_others_counts(kind: Any, store: Store) -> None:
    other = kind.new()  # a second store on the same storage, with its own view of the group
    await other.open()
    try:
        mine, theirs = Group(), Group()
        theirs.report = ErrorReport(**{**{f: getattr(mine.report, f) for f in (
            "error_id", "error_type", "error_severity", "message", "category", "fingerprint",
            "first_seen", "last_seen")}, "context": ErrorContext(component="w", operation="send")})
        seqs = []
        for i in range(30):
            seqs.append(mine.occur(store))
            seqs.append(theirs.occur(other, changed=(i == 10)))
        await asyncio.gather(*(s.wait_durable(q, 30) for s, q in zip([store, other] * 30, seqs, strict=True)))
        await store.flush(30)
        await other.flush(30)
        stored = await store.get_group(mine.id)
        assert stored is not None and stored.aggregated_count == 60  # the sum, not either writer's view
        assert mine.report.aggregated_count == theirs.report.aggregated_count == 30
    finally:
        await other.close()


# -- cursors ------------------------------------------------------------------------------------------

async def walk_pages(store: Store, limit: int, **query: Any) -> tuple[list[str], list[tuple[str, str]]]:
    """Every page of a query, ``limit`` at a time: the ids and (last_seen, id) keys in order."""
    seen: list[str] = []
    keys: list[tuple[str, str]] = []
    after = None
    while True:
        page = await store.list_groups(GroupQuery(limit=limit, after=after, **query))
        assert len(page.items) <= limit
        seen += [item["error_id"] for item in page.items]
        keys += [(item["last_seen"], item["error_id"]) for item in page.items]
        if page.next_cursor is None:
            return seen, keys
        after = page.next_cursor

async def test_paging_with_the_cursor_returns_every_group_exactly_once(store: Store) -> None:
    tie = utcnow() - timedelta(minutes=5)
    groups = [Group(at=tie if i % 3 == 0 else tie + timedelta(seconds=i)) for i in range(120)]
    for i, g in enumerate(groups):
        g.occur(store)
        if i % 4 == 0:
            g.report.resolve("test")
            g.save(store)
    await store.flush(30)
    for status, expect in (("all", 120), ("open", 90), ("resolved", 30)):
        seen, keys = await walk_pages(store, 7, status=status)
        assert len(seen) == len(set(seen)) == expect, status
        assert keys == sorted(keys, reverse=True)  # newest first, ties broken by id
    first = await store.list_groups(GroupQuery(status="all", limit=1000, component="w", min_rank=2))
    assert len(first.items) == 120 and first.next_cursor is None
    assert set(first.items[0]) >= {"error_id", "aggregated_count", "resolution_status", "last_seen"}
    assert not (await store.list_groups(GroupQuery(status="all", component="nobody"))).items


async def test_every_filter_pages_exactly_its_groups_newest_first(store: Store) -> None:
    """Each filter GET /errors offers, alone and combined, paged 6 at a time: exactly the groups it
    accepts, each once, newest first (ties on last_seen broken by id); selective ones too (the
    oldest few groups of a component, the resolved ones, none)."""
    base = utcnow() - timedelta(minutes=10)
    types = (ErrorType.NETWORK, ErrorType.DATABASE, ErrorType.TIMEOUT)
    severities = (ErrorSeverity.LOW, ErrorSeverity.MEDIUM, ErrorSeverity.CRITICAL)
    groups = []
    for i in range(90):
        g = Group(at=base + timedelta(seconds=i // 2))  # pairs share a last_seen
        r = g.report
        r.error_type, r.error_severity = types[i % 3], severities[(i // 3) % 3]
        r.context = ErrorContext(component="rare" if i < 4 else f"w{i % 4}", operation="send")
        g.occur(store)
        if i % 5 == 0:
            r.resolve("test")
            g.save(store)
        groups.append(g)
    await store.flush(30)
    filters: list[dict[str, Any]] = [
        {"status": s, **extra}
        for s in ("open", "resolved", "all")
        for extra in ({}, {"component": "w2"}, {"component": "rare"}, {"min_rank": ErrorSeverity.CRITICAL.rank},
                      {"error_type": "timeout"}, {"component": "w1", "min_rank": ErrorSeverity.MEDIUM.rank,
                                                  "error_type": "database"}, {"component": "nobody"})
    ]
    for f in filters:
        want = {
            g.id for g in groups
            if f["status"] == "all" or (g.report.resolution_status == "resolved") == (f["status"] == "resolved")
            if f.get("component") in (None, g.report.context.component)
            if g.report.error_severity.rank >= f.get("min_rank", 0)
            if f.get("error_type") in (None, g.report.error_type.value)
        }
        seen, keys = await walk_pages(store, 6, **f)
        assert len(seen) == len(set(seen)) and set(seen) == want, f
        assert keys == sorted(keys, reverse=True), f
    assert len([g for g in groups if g.report.context.component == "rare"]) == 4


# -- restart state --------------------------------------------------------------------------------
async def test_everything_acknowledged_is_there_after_a_restart(kind: Any) -> None:
    store = kind.new()
    await store.open()
    open_g, recent, old = Group(), Group(), Group()
    for g in (open_g, recent, old):
        for _ in range(3):
            g.occur(store)
    recent.report.resolve("retry")
    recent.save(store)
    old.report.resolve("manual", at=utcnow() - timedelta(days=2))
    old.save(store)
    store.save_recovery_level(LevelRecord(open_g.id, 3, utcnow(), ({"level": 1}, {"level": 2})))
    store.save_strategy_score(StrategyScore("network", "retry", 0.75, 4, {"total": 4, "window": []}))
    store.save_timeout(TimeoutRecord("network", "retry", 2.5, 0.4, 0.1, 4))
    store.save_learner_state(LearnerRecord("policy", {"x": 1}))
    store.record_strategy_run(run(open_g.id, ok=False, level=3))
    await store.close()  # close flushes

    again = kind.new()
    await again.open()
    try:
        state = await again.load_state(3600, 1000)
        assert {g.error_id for g in state.groups} == {open_g.id, recent.id}  # resolved long ago: not restored
        by_id = {g.error_id: g for g in state.groups}
        assert by_id[open_g.id].aggregated_count == 3 and by_id[open_g.id].resolution_status == "open"
        assert by_id[recent.id].resolution_status == "resolved" and by_id[recent.id].resolution_strategy == "retry"
        assert by_id[open_g.id].to_report().context.metadata == open_g.report.context.metadata
        assert [(lv.error_id, lv.level, len(lv.history)) for lv in state.levels] == [(open_g.id, 3, 2)]
        assert [(s.key, s.strategy_id, s.samples, dict(s.metrics)) for s in state.scores] == [
            ("network", "retry", 4, {"total": 4, "window": []})]
        assert [(t.timeout, t.srtt, t.samples) for t in state.timeouts] == [(2.5, pytest.approx(0.4, 1e-6), 4)]
        assert [(x.key, dict(x.state)) for x in state.learner] == [("policy", {"x": 1})]
        assert state.skipped == 0
        old_g = await again.get_group(old.id)
        assert old_g is not None and old_g.aggregated_count == 3  # still stored, just not restored
        runs = await again.strategy_runs(open_g.id)
        assert [(r.strategy_id, r.success, r.level, dict(r.context)) for r in runs] == [
            ("retry", False, 3, {"why": "test"})]
        perf = await again.strategy_performance()
        assert perf["strategies"]["retry"]["total_executions"] == 1
        summary = await again.recovery_summary()
        assert summary["summary"]["by_level"] == {"3": 1}
        series = await again.occurrence_series(open_g.id, 10)
        assert series is not None and series["total"] == 3
        assert await again.occurrence_series("nope") is None
        assert [g.error_id for g in await again.unresolved_groups()] == [open_g.id]
    finally:
        await again.close()


async def test_a_damaged_stored_row_is_skipped_and_counted(kind: Any) -> None:
    store = kind.new()
    await store.open()
    good, bad = Group(), Group()
    good.occur(store)
    bad.occur(store)
    await store.close()
    kind.damage_group(bad.id)
    again = kind.new()
    await again.open()
    try:
        state = await again.load_state(600, 1000)
        assert [g.error_id for g in state.groups] == [good.id] and state.skipped == 1
        assert again.status().skipped_rows == 1
    finally:
        await again.close()


# -- faults -----------------------------------------------------------------------------------------
async def test_a_failing_database_surfaces_and_loses_nothing_acknowledged(kind: Any, store: Store) -> None:
    acked = Group()
    await store.wait_durable(acked.occur(store), 10)
    kind.break_link(store)
    queued = [Group() for _ in range(10)]
    seqs = [g.occur(store) for g in queued] + [acked.occur(store)]
    for _ in range(100):
        if not store.status().ok:
            break
        await asyncio.sleep(0.05)
    status = store.status()
    assert not status.ok and status.last_error and status.pending_writes >= len(seqs)
    assert not await store.ping()
    await kind.heal(store)
    await asyncio.gather(*(store.wait_durable(s, 30) for s in seqs))
    await store.flush(30)
    assert store.status().ok and await store.ping()
    for g in [*queued, acked]:
        stored = await store.get_group(g.id)
        assert stored is not None and stored.aggregated_count == g.report.aggregated_count


async def test_a_write_the_database_refuses_surfaces_and_blocks_nothing(store: Store) -> None:
    g = Group()
    store.save_strategy_score(StrategyScore("network", "x", "not a number", 1, {}))  # type: ignore[arg-type]
    seq = g.occur(store)
    await store.wait_durable(seq, 10)
    await store.flush(10)
    assert store.status().dropped_writes == 1 and store.status().last_error
    assert await store.get_group(g.id) is not None
    later = Group()
    await store.wait_durable(later.occur(store), 10)
    assert await store.get_group(later.id) is not None


async def test_retention_removes_old_occurrences_and_runs_only(store: Store) -> None:
    g = Group(at=utcnow() - timedelta(days=40))
    g.occur(store)
    g.report.last_seen = utcnow()
    g.occur(store)
    old_run = StrategyRun("retry", "Retry", "network", 0.1, True, error_id=g.id,
                          timestamp=utcnow() - timedelta(days=40))
    store.record_strategy_run(old_run)
    store.record_strategy_run(run(g.id))
    await store.flush(10)
    await store.wait_durable(store.apply_retention(30), 10)
    assert len(await store.occurrences(g.id)) == 1 and len(await store.strategy_runs(g.id)) == 1
    stored = await store.get_group(g.id)
    assert stored is not None and stored.aggregated_count == 2  # the group keeps its count


async def test_a_closed_store_refuses_to_promise_durability(kind: Any) -> None:
    store = kind.new()
    await store.open()
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreClosed):
        await store.wait_durable(Group().occur(store), 1)
