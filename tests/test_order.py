"""Issue 18: the DuckDB store's in-memory paging view (storage/order.py, storage/sortedkeys.py).

Every filter the API offers reads its pages from sorted sets that hold only the groups it
accepts: checked here against a plain model (a list filtered and sorted on every read) through
many random updates (new groups, later occurrences, resolutions, regressions, severity changes,
a clock stepping back), for every filter and page size, at every depth."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from coordinator_plugins.error_handling.model import (
    ErrorCategory,
    ErrorSeverity,
    ErrorType,
    ResolutionStatus,
)
from coordinator_plugins.error_handling.storage.duckdb.order import GroupOrder, from_micros, micros
from coordinator_plugins.error_handling.storage.duckdb.sortedkeys import LOAD, SortedKeys
from coordinator_plugins.error_handling.storage.records import GroupRecord

T0 = 1_790_000_000_000_000  # us
TYPES = (ErrorType.NETWORK, ErrorType.DATABASE, ErrorType.TIMEOUT)
SEVERITIES = (ErrorSeverity.LOW, ErrorSeverity.MEDIUM, ErrorSeverity.CRITICAL)
STATUSES = (ResolutionStatus.OPEN, ResolutionStatus.RETRYING, ResolutionStatus.FAILED, ResolutionStatus.RESOLVED)


def test_sorted_keys_agree_with_a_sorted_list_through_splits_and_emptied_blocks() -> None:
    rnd = random.Random(7)
    sk = SortedKeys()
    ref: set[tuple[int, str]] = set()

    def check() -> None:
        ordered = sorted(ref)
        assert list(sk) == ordered and len(sk) == len(ref) and bool(sk) == bool(ref)
        assert list(sk.below()) == ordered[::-1]
        for pivot in rnd.sample(ordered, min(3, len(ordered))):
            assert list(sk.below(pivot)) == [k for k in reversed(ordered) if k < pivot]
            assert list(sk.below((pivot[0], pivot[1] + "~"))) == [k for k in reversed(ordered) if k <= pivot]

    def add(step: int) -> None:
        key = (rnd.randrange(10_000) if rnd.random() < 0.3 else T0 + step, f"g{rnd.getrandbits(32):08x}")
        if key not in ref:
            sk.add(key)
            ref.add(key)

    for step in range(6 * LOAD):  # grow: mostly the newest, some in the middle (splits)
        add(step)
    check()
    assert sk.block_count > 4
    for step in range(6 * LOAD, 12 * LOAD):  # moves: a removal and an addition
        key = rnd.choice(tuple(ref)) if step % 2 else max(ref)
        assert sk.remove(key) and not sk.remove(key) and key not in sk
        ref.discard(key)
        add(step)
        if step % 211 == 0:
            check()
    while len(ref) > 3:  # shrink: emptied blocks go away
        key = rnd.choice(tuple(ref))
        assert sk.remove(key)
        ref.discard(key)
        if len(ref) % 500 == 0:
            check()
    check()
    assert sk.block_count <= 3 and not sk.remove((0, "nobody"))


def record(i: int, ls_us: int, rnd: random.Random) -> GroupRecord:
    at = from_micros(ls_us)
    return GroupRecord(
        error_id=f"{i:06d}", fingerprint=f"fp{i}", error_type=rnd.choice(TYPES), error_severity=rnd.choice(SEVERITIES),
        category=ErrorCategory.CONNECTION, message=f"m{i}", component=rnd.choice(("a", "b", "c", "rare" if i < 5 else "a")),  # noqa: E501
        operation="op", worker_id=None, task_id=None, hardware_id=None, exception_type=None, stack_trace=None,
        metadata={}, first_seen=at, last_seen=at, aggregated_count=1, retry_count=0, retry_successful=None,
        resolution_status=ResolutionStatus.OPEN, resolution_time=None, resolution_strategy=None, regression_count=0,
        recovery_level=1, recovery_details={},
    )


FILTERS: list[dict[str, Any]] = [
    {"status": s, **extra}
    for s in ("open", "resolved", "all")
    for extra in ({}, {"component": "b"}, {"component": "rare"}, {"component": "nobody"}, {"min_rank": 3},
                  {"error_type": "timeout"}, {"component": "a", "min_rank": 2, "error_type": "network"})
]


def expected(model: dict[str, tuple[int, GroupRecord]], f: dict[str, Any]) -> list[str]:
    out = []
    for error_id, (ls, g) in model.items():
        is_open = g.resolution_status is not ResolutionStatus.RESOLVED
        if (f["status"] == "open" and not is_open) or (f["status"] == "resolved" and is_open):
            continue
        if "component" in f and g.component != f["component"]:
            continue
        if "min_rank" in f and g.error_severity.rank < f["min_rank"]:
            continue
        if "error_type" in f and g.error_type.value != f["error_type"]:
            continue
        out.append((ls, error_id))
    return [e for _, e in sorted(out, reverse=True)]


def walk(order: GroupOrder, f: dict[str, Any], limit: int) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = order.page(f["status"], f.get("component"), f.get("min_rank"), f.get("error_type"), limit + 1, after)
        seen += [e for e, _, _ in page[:limit]]
        if len(page) <= limit:
            return seen
        error_id, _, ls = page[limit - 1]
        after = (ls, error_id)


def test_every_filter_pages_exactly_its_groups_newest_first_through_random_updates() -> None:
    rnd = random.Random(18)
    model: dict[str, tuple[int, GroupRecord]] = {}
    initial = [record(i, T0 + i * 1000, rnd) for i in range(300)]
    for g in initial:
        model[g.error_id] = (micros(g.last_seen), g)
    order = GroupOrder()
    order.note([(g, None) for g in initial])  # before the build: ignored, the table has them
    order.build(lambda: [(g.error_id, micros(g.last_seen), True, g.component, g.error_severity.rank,
                          g.error_type.value, n) for n, g in enumerate(initial)])
    clock = T0 + 10**9
    n_new = 300
    for step in range(60):
        groups: list[tuple[GroupRecord, Any]] = []
        counts: list[tuple[str, Any]] = []
        for _ in range(rnd.randrange(1, 40)):
            clock += rnd.choice((0, 1, 1000))  # ties on last_seen too
            op = rnd.random()
            if op < 0.2:
                g = record(n_new, clock, rnd)
                n_new += 1
                model[g.error_id] = (clock, g)
                groups.append((g, None))
                continue
            error_id = rnd.choice(list(model))
            ls, g = model[error_id]
            if op < 0.5:  # an occurrence: only the count row moves (or a stale older time: no move)
                seen = clock if rnd.random() < 0.9 else ls - 5000
                model[error_id] = (max(ls, seen), g)
                counts.append((error_id, from_micros(seen)))
            elif op < 0.7:  # resolved (or reopened) without a new occurrence
                status = rnd.choice(STATUSES)
                g = replace(g, resolution_status=status)
                model[error_id] = (ls, g)
                groups.append((g, None))
            elif op < 0.85:  # a regression: reopened by an occurrence
                g = replace(g, resolution_status=ResolutionStatus.OPEN, last_seen=from_micros(clock))
                model[error_id] = (max(ls, clock), g)
                groups.append((g, from_micros(clock)))
            else:  # the severity escalates; the snapshot's own last_seen older than the stored one
                g = replace(g, error_severity=rnd.choice(SEVERITIES), last_seen=from_micros(ls - 1))
                model[error_id] = (ls, g)
                groups.append((g, None))
        order.note(groups, counts)
        if step % 6 == 5:
            for f in FILTERS:
                want = expected(model, f)
                for limit in (1, 7, 1000):
                    assert walk(order, f, limit) == want, (f, limit)
    assert len(order) == len(model)
    # every set is as large as its groups: no key is left behind by a move
    assert order.index_sizes() == (len(model), len(model), len(model))


def test_a_selective_filter_reads_only_its_own_keys() -> None:
    """A component with 3 groups among 20,000, the oldest: its page reads those 3 keys, not the
    view (SortedKeys.below counts what it yields)."""
    rows = [(f"{i:06d}", T0 + i, True, "rare" if i < 3 else f"c{i % 40}", 2, "network", i) for i in range(20_000)]
    order = GroupOrder()
    order.build(lambda: rows)
    read = 0
    original = SortedKeys.below

    def counting(self: SortedKeys, after: Any = None) -> Any:
        nonlocal read
        for key in original(self, after):
            read += 1
            yield key

    SortedKeys.below = counting  # type: ignore[method-assign]
    try:
        page = order.page("open", "rare", None, None, 101, None)
        assert [e for e, _, _ in page] == ["000002", "000001", "000000"] and read == 3
        read = 0
        assert order.page("resolved", None, None, None, 101, None) == [] and read == 0
        after = (T0 + 10_000, "010000")
        page = order.page("open", "c7", 2, "network", 11, after)
        assert len(page) == 11 and read <= 11 and all(int(e) % 40 == 7 and int(e) < 10_000 for e, _, _ in page)
    finally:
        SortedKeys.below = original  # type: ignore[method-assign]
