"""The PostgreSQL store on a real server: durability, counts as increments across stores
(fleet members), migrations, and the fleet primitives (claims, leases, budget, events, runs).
Each test gets a database of its own (tests/pg_harness.py), dropped at the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from coordinator_plugins.error_handling.config import validate_config
from coordinator_plugins.error_handling.model import ErrorCategory, ErrorContext, ErrorReport, ErrorSeverity, ErrorType
from coordinator_plugins.error_handling.storage.base import SchemaTooNew, Store
from coordinator_plugins.error_handling.storage.factory import open_store
from coordinator_plugins.error_handling.storage.postgres import PostgresStore
from coordinator_plugins.error_handling.storage.postgres.pool import redact
from coordinator_plugins.error_handling.storage.postgres.schema import SCHEMA_VERSION
from coordinator_plugins.error_handling.storage.records import (
    GroupQuery,
    GroupRecord,
    LevelRecord,
    OccurrenceRecord,
    StrategyRun,
)


def report(error_id: str, fp: str = "fp", message: str = "connection reset") -> ErrorReport:
    return ErrorReport(
        error_id=error_id, error_type=ErrorType("network"), error_severity=ErrorSeverity("high"), message=message,
        context=ErrorContext(component="db", operation="query"), category=ErrorCategory("connection"),
        fingerprint=fp,
    )


def occur(store: PostgresStore, r: ErrorReport, message: str | None = None) -> int:
    return store.record_occurrence(OccurrenceRecord.of(r, message or r.message, None), GroupRecord.of(r))


@pytest.fixture
async def stores(pg_url: str) -> AsyncIterator[Callable[..., Any]]:
    opened: list[PostgresStore] = []

    async def make(member: str = "m1") -> PostgresStore:
        s = PostgresStore(pg_url, member)
        await s.open()
        opened.append(s)
        return s

    yield make
    for s in opened:
        await s.close()


async def test_factory_selects_postgres_and_never_shows_the_password(pg_url: str) -> None:
    url = pg_url.replace("postgres@", "postgres:s3cret@")
    store = open_store(validate_config({"database": url, "coordinator_id": "a"}))
    assert isinstance(store, PostgresStore) and isinstance(store, Store)
    await store.open()  # trust authentication: the password is not needed, and must never be shown
    try:
        assert "s3cret" not in store.status().path and "s3cret" not in repr(store.status())
        assert redact(url).startswith("postgresql://postgres:***@")
    finally:
        await store.close()


async def test_counts_from_two_members_are_increments_never_last_writer_wins(stores: Callable[..., Any]) -> None:
    a, b = await stores("a"), await stores("b")
    ra, rb = report("g1"), report("g1")
    seqs_a: list[int] = []
    seqs_b: list[int] = []
    for i in range(300):  # interleaved, each member writing its own stale snapshot of the group
        seqs_a.append(occur(a, ra, f"m{i}"))
        seqs_b.append(occur(b, rb, f"m{i}"))
        if i % 50 == 0:
            await asyncio.sleep(0)
    await asyncio.gather(a.wait_durable(seqs_a[-1], 20), b.wait_durable(seqs_b[-1], 20))
    group = await a.get_group("g1")
    assert group is not None and group.aggregated_count == 600
    totals = await b.totals()
    assert totals.occurrences == 600 and totals.aggregated == 600 and totals.groups == 1


async def test_a_202_worth_of_durability_is_a_commit(pg_url: str, stores: Callable[..., Any]) -> None:
    a = await stores("a")
    seq = occur(a, report("g2"))
    await a.wait_durable(seq, 10)
    con = await asyncpg.connect(pg_url)  # another connection sees it: it is committed
    try:
        assert await con.fetchval("SELECT count(*) FROM error_occurrences WHERE error_id = 'g2'") == 1
        assert await con.fetchval("SELECT max(version) FROM schema_version") == SCHEMA_VERSION
    finally:
        await con.close()


async def test_a_stale_snapshot_never_undoes_a_resolution_made_elsewhere(stores: Callable[..., Any]) -> None:
    a, b = await stores("a"), await stores("b")
    ra = report("g3")
    await a.wait_durable(occur(a, ra), 10)
    rb = (await b.get_group("g3")).to_report()  # type: ignore[union-attr]
    ra.resolve("manual")
    await a.wait_durable(a.save_group(GroupRecord.of(ra)), 10)
    rb.retry_count += 1  # b changes something else from its older view
    await b.wait_durable(b.save_group(GroupRecord.of(rb)), 10)
    g = await a.get_group("g3")
    assert g is not None and g.resolution_status == "resolved" and g.retry_count == 1
    rb.last_seen = ra.resolution_time.replace(year=ra.resolution_time.year + 1)  # type: ignore[union-attr]
    rb.reopen(regression=True)  # an occurrence after the resolution: a regression does reopen it
    await b.wait_durable(occur(b, rb), 10)
    g = await a.get_group("g3")
    assert g is not None and g.resolution_status == "open" and g.aggregated_count == 2


async def test_data_postgres_refuses_is_cleaned_not_lost(stores: Callable[..., Any]) -> None:
    a = await stores()
    r = report("g4", message="nul \x00 and lone \ud800 surrogate")
    r.context.metadata = {"k": "\x00\udfff"}
    await a.wait_durable(occur(a, r), 10)
    g = await a.get_group("g4")
    assert g is not None and g.aggregated_count == 1 and "\x00" not in g.message
    page = await a.list_groups(GroupQuery(status="all"))
    assert [i["error_id"] for i in page.items] == ["g4"]
    assert a.status().dropped_writes == 0


async def test_writes_buffer_while_the_server_drops_connections_and_none_is_lost(
    pg_url: str, stores: Callable[..., Any]
) -> None:
    a = await stores()
    r = report("g5")
    await a.wait_durable(occur(a, r), 10)
    admin = await asyncpg.connect(pg_url.rsplit("/", 1)[0] + "/postgres")
    try:
        seqs = []
        for i in range(20):
            # The server terminates the store's connections (as a restart or a failover would).
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 "
                                "AND pid <> pg_backend_pid()", pg_url.rsplit("/", 1)[1])
            seqs.append(occur(a, r, f"during outage {i}"))
            await asyncio.sleep(0.02)
        await a.wait_durable(seqs[-1], 30)
    finally:
        await admin.close()
    g = await a.get_group("g5")
    assert g is not None and g.aggregated_count == 21
    assert (await a.totals()).occurrences == 21


async def test_migrations_are_numbered_and_a_newer_schema_is_refused(pg_url: str, stores: Callable[..., Any]) -> None:
    await stores()
    b = await stores("b")  # a second open applies nothing twice
    assert b.schema_version == SCHEMA_VERSION
    con = await asyncpg.connect(pg_url)
    try:
        versions = [r[0] for r in await con.fetch("SELECT version FROM schema_version ORDER BY 1")]
        assert versions == list(range(1, SCHEMA_VERSION + 1))
        await con.execute("INSERT INTO schema_version (version, description) VALUES (99, 'from the future')")
    finally:
        await con.close()
    with pytest.raises(SchemaTooNew, match="99"):
        await PostgresStore(pg_url, "c").open()


async def test_one_group_per_fingerprint_claimed_atomically(stores: Callable[..., Any]) -> None:
    a, b = await stores("a"), await stores("b")
    got = await asyncio.gather(*(s.claim_group("fpX", f"id-{i}", 600) for i, s in enumerate([a, b] * 10)))
    assert len(set(got)) == 1


async def test_a_lease_has_one_owner_until_it_expires(stores: Callable[..., Any]) -> None:
    a, b = await stores("a"), await stores("b")
    results = await asyncio.gather(*(s.acquire_lease("g6", 1.0) for s in [a, b] * 5))
    owners = {owner for ok, owner, _ in results if ok}
    assert len(owners) == 1
    owner = a if owners == {"a"} else b
    other = b if owner is a else a
    ok, holder, left = await other.acquire_lease("g6", 1.0)
    assert not ok and holder == owner.coordinator_id and 0 < left <= 1.0
    assert await owner.renew_leases(["g6"], 1.0) == ["g6"]
    await asyncio.sleep(1.2)  # not renewed: it expires, and the other member may take it
    ok, holder, _ = await other.acquire_lease("g6", 5.0)
    assert ok and holder == other.coordinator_id
    assert await owner.renew_leases(["g6"], 1.0) == []  # lost: the old owner learns it


async def test_the_budget_is_counted_across_members(stores: Callable[..., Any]) -> None:
    a, b = await stores("a"), await stores("b")
    grants = await asyncio.gather(*(s.budget_acquire("comp", 60, 3, 0) for s in [a, b] * 5))
    assert sum(1 for action, _ in grants if action is not None) == 3
    refused = [wait for action, wait in grants if action is None]
    assert refused and all(0 < w <= 60 for w in refused)
    first = next(action for action, _ in grants if action is not None)
    assert first is not None
    await a.budget_refund(first)
    assert (await b.budget_acquire("comp", 60, 3, 0))[0] is not None
    assert (await b.budget_acquire("other", 60, 3, 3))[0] is None  # the global limit, fleet-wide


async def test_events_and_runs_of_other_members_are_seen(stores: Callable[..., Any]) -> None:
    a, b = await stores("a"), await stores("b")
    await a.publish_event("resolve", "g7", {"resolution": "manual"})
    events = await b.events_since(0)
    assert [(e["kind"], e["error_id"], e["coordinator_id"]) for e in events] == [("resolve", "g7", "a")]
    assert await a.events_since(0) == []  # a member does not see its own
    a.record_strategy_run(StrategyRun("retry", "Retry", "network", 0.2, True, error_id="g7", level=1))
    await a.flush(10)
    runs = await b.runs_since(0)
    assert [r.strategy_id for _, r in runs] == ["retry"] and await a.runs_since(0) == []
    await a.wait_durable(a.save_recovery_level(LevelRecord("g7", 3, runs[0][1].timestamp, ({"x": 1},))), 10)
    lvl = await b.recovery_level("g7")
    assert lvl is not None and lvl.level == 3 and lvl.history == ({"x": 1},)


async def test_retention_run_by_every_member_at_once_does_not_fight(stores: Callable[..., Any]) -> None:
    from datetime import timedelta

    from coordinator_plugins.error_handling.model import utcnow

    a, b = await stores("a"), await stores("b")
    old = report("g8")
    old.first_seen = old.last_seen = utcnow() - timedelta(days=40)
    await a.wait_durable(occur(a, old), 10)
    old.last_seen = utcnow()
    await a.wait_durable(occur(a, old), 10)
    await asyncio.gather(a.wait_durable(a.apply_retention(30), 10), b.wait_durable(b.apply_retention(30), 10))
    assert len(await a.occurrences("g8")) == 1
    g = await b.get_group("g8")
    assert g is not None and g.aggregated_count == 2  # counts stay: nothing to reconcile on PostgreSQL
    await asyncio.gather(a.prune_fleet(60, 15), b.prune_fleet(60, 15))  # idempotent, concurrently
