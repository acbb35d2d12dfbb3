"""Issue 3: classification, grouping, hooks, retry policy, durable storage."""

from __future__ import annotations

import asyncio
import errno
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import pytest

from coordinator_plugins.error_handling import (
    DuckDBStore,
    EnhancedErrorHandlingIntegration,
    ErrorCategory,
    ErrorHandlingConfig,
    ErrorSeverity,
    ErrorType,
    RetryPolicy,
    validate_config,
)
from coordinator_plugins.error_handling.intake.classify import classify
from coordinator_plugins.error_handling.intake.group import fingerprint, normalize_message

T, C, S = ErrorType, ErrorCategory, ErrorSeverity


def _aiohttp_connector_error() -> BaseException:
    from aiohttp.client_reqrep import ConnectionKey

    key = ConnectionKey("10.0.0.7", 5432, False, True, None, None, None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(errno.ECONNREFUSED, "refused"))


# (exception or (message, exception_type name), context, type, category, severity)
CASES: list[tuple[Any, dict[str, Any], ErrorType, ErrorCategory, ErrorSeverity]] = [
    (ConnectionResetError("Connection reset by peer"), {}, T.NETWORK, C.CONNECTION, S.MEDIUM),
    (ConnectionRefusedError(111, "refused"), {}, T.NETWORK, C.CONNECTION, S.MEDIUM),
    (BrokenPipeError("broken pipe"), {}, T.NETWORK, C.CONNECTION, S.MEDIUM),
    (ConnectionAbortedError("aborted"), {}, T.NETWORK, C.CONNECTION, S.MEDIUM),
    (ConnectionError("failed to import module foo"), {}, T.NETWORK, C.CONNECTION, S.MEDIUM),
    (_aiohttp_connector_error(), {}, T.NETWORK, C.CONNECTION, S.MEDIUM),
    (aiohttp.ServerDisconnectedError(), {}, T.NETWORK, C.CONNECTION, S.MEDIUM),
    (aiohttp.ClientPayloadError("truncated"), {}, T.NETWORK, C.CONNECTION, S.MEDIUM),
    (TimeoutError(), {}, T.TIMEOUT, C.TIMEOUT, S.MEDIUM),
    (TimeoutError("took too long"), {"task_id": "t1"}, T.TIMEOUT, C.TASK_TIMEOUT, S.MEDIUM),
    (aiohttp.ServerTimeoutError("read timeout"), {}, T.TIMEOUT, C.TIMEOUT, S.MEDIUM),
    (subprocess.TimeoutExpired(["x"], 5), {"component": "task"}, T.TIMEOUT, C.TASK_TIMEOUT, S.MEDIUM),
    (MemoryError(), {}, T.RESOURCE, C.SYSTEM_RESOURCE, S.HIGH),
    (OSError(errno.ENOSPC, "No space left on device"), {}, T.RESOURCE, C.DISK_FULL, S.CRITICAL),
    (OSError(errno.ENOMEM, "Cannot allocate memory"), {"worker_id": "w1"}, T.RESOURCE, C.WORKER_RESOURCE, S.MEDIUM),
    (OSError(errno.EMFILE, "Too many open files"), {}, T.RESOURCE, C.SYSTEM_RESOURCE, S.HIGH),
    (PermissionError("denied"), {}, T.AUTHORIZATION, C.UNAUTHORIZED, S.HIGH),
    (AssertionError("expected 3 got 4"), {}, T.ASSERTION, C.TEST_FAILURE, S.LOW),
    (ModuleNotFoundError("No module named 'torch'"), {}, T.DEPENDENCY, C.DEPENDENCY, S.MEDIUM),
    (ImportError("cannot import name x"), {}, T.DEPENDENCY, C.DEPENDENCY, S.MEDIUM),
    (duckdb.ConnectionException("Connection already closed!"), {}, T.DATABASE, C.DB_CONNECTION, S.HIGH),
    (duckdb.ConstraintException("duplicate key"), {}, T.DATABASE, C.DB_INTEGRITY, S.HIGH),
    (duckdb.IOException('Could not set lock on file "x"'), {}, T.DATABASE, C.DB_LOCKED, S.HIGH),
    (duckdb.CatalogException("Table foo does not exist"), {}, T.DATABASE, C.DB_QUERY, S.MEDIUM),
    (duckdb.TransactionException("conflict"), {}, T.DATABASE, C.DB_LOCKED, S.HIGH),
    (ValueError("bad literal"), {}, T.VALIDATION, C.VALIDATION, S.LOW),
    (RuntimeError("worker w3 crashed with signal 9"), {"component": "worker"}, T.WORKER, C.WORKER_CRASH, S.HIGH),
    (RuntimeError("missed heartbeats"), {"component": "worker", "operation": "heartbeat"}, T.WORKER,
     C.WORKER_OFFLINE, S.HIGH),
    (RuntimeError("scheduler loop stalled"), {"component": "scheduler"}, T.SCHEDULING, C.SCHEDULER_STALLED, S.HIGH),
    (RuntimeError("inconsistent state"), {"component": "state"}, T.STATE, C.STATE_ERROR, S.HIGH),
    (RuntimeError("boom"), {"component": "coordinator"}, T.COORDINATION, C.COORDINATOR_ERROR, S.HIGH),
    (RuntimeError("request timed out"), {"component": "coordinator"}, T.TIMEOUT, C.TIMEOUT, S.MEDIUM),
    (RuntimeError("cpu overload on host"), {}, T.SYSTEM, C.SYSTEM_OVERLOAD, S.HIGH),
    (RuntimeError("whatever"), {"error_type": "database", "severity": "critical"}, T.DATABASE, C.DB_QUERY,
     S.CRITICAL),
    (ConnectionResetError("x"), {"error_type": "worker"}, T.WORKER, C.WORKER_OFFLINE, S.HIGH),
    # worker reports: exception class by name, plus the message
    (("Connection reset by peer", "ConnectionResetError"), {}, T.NETWORK, C.CONNECTION, S.MEDIUM),
    (("Connection already closed!", "ConnectionException"), {}, T.DATABASE, C.DB_CONNECTION, S.HIGH),
    (("failed to import module", "aiohttp.ClientConnectorError"), {}, T.NETWORK, C.CONNECTION, S.MEDIUM),
    (("[Errno 28] No space left on device", "OSError"), {}, T.RESOURCE, C.DISK_FULL, S.CRITICAL),
    (("disk quota", "_duckdb.OutOfMemoryException"), {}, T.RESOURCE, C.SYSTEM_RESOURCE, S.HIGH),
    (("simulated infrastructure error", "RuntimeError"), {"component": "task", "task_id": "t"}, T.TEST_EXECUTION,
     C.TASK_ERROR, S.MEDIUM),
    (("no module named numpy", "SomeCustomError"), {}, T.DEPENDENCY, C.DEPENDENCY, S.MEDIUM),
]


@pytest.mark.parametrize(("error", "ctx", "etype", "category", "severity"), CASES)
def test_classification_table(error: Any, ctx: dict[str, Any], etype: ErrorType, category: ErrorCategory,
                              severity: ErrorSeverity) -> None:
    exc, name, message = (None, error[1], error[0]) if isinstance(error, tuple) else (error, None, str(error))
    got = classify(exc, message, ctx.get("component", ""), ctx.get("operation", ""), exception_type=name,
                   explicit_type=ErrorType(ctx["error_type"]) if "error_type" in ctx else None,
                   explicit_severity=ErrorSeverity(ctx["severity"]) if "severity" in ctx else None,
                   has_task=bool(ctx.get("task_id")), has_worker=bool(ctx.get("worker_id")))
    assert (got.error_type, got.category, got.severity) == (etype, category, severity)


def test_enough_cases() -> None:
    assert len(CASES) >= 30


def test_severity_orders_by_rank_not_string() -> None:
    assert S.INFO < S.LOW < S.MEDIUM < S.HIGH < S.CRITICAL
    assert max([S.HIGH, S.CRITICAL, S.LOW]) is S.CRITICAL


def test_fingerprint_masks_volatile_parts() -> None:
    a = fingerprint("network", "connection", "worker", "send", "ConnectionResetError",
                    "Connection reset by peer at 10.0.0.7:5432 (attempt 3)")
    b = fingerprint("network", "connection", "worker", "send", "ConnectionResetError",
                    "Connection reset by peer at 192.168.4.20:6000 (attempt 17)")
    other_comp = fingerprint("network", "connection", "scheduler", "send", "ConnectionResetError",
                             "Connection reset by peer at 10.0.0.7:5432 (attempt 3)")
    other_cls = fingerprint("network", "connection", "worker", "send", "BrokenPipeError",
                            "Connection reset by peer at 10.0.0.7:5432 (attempt 3)")
    assert a == b and a != other_comp and a != other_cls
    assert normalize_message("job 3f2a9c1e-1111-2222-3333-444455556666 at 2026-11-28T10:00:00Z in /var/x/y.py") == \
        "job <uuid> at <ts> in <path>"


@pytest.mark.parametrize(("message", "normalized"), [
    ("exit code 137 after 30 s", "exit code <n> after <n> s"),
    ("exit code 1", "exit code <n>"),
    ("retry 12) of 3,", "retry <n>) of <n>,"),
    ("port 5432 refused", "port <n> refused"),
    ("value \u0663\u0664 is out of range", "value <n> is out of range"),  # non-ASCII digits: the regex path
    ("deadbeef12 and 12345678", "<hex> and <n>"),
    ("-5 and +7.5", "<n> and <n>"),
])
def test_numbers_are_masked_alike_on_every_path(message: str, normalized: str) -> None:
    assert normalize_message(message) == normalized


async def make_integ(tmp_path: Path, **cfg: Any) -> EnhancedErrorHandlingIntegration:
    base = {"database": str(tmp_path / "eh.duckdb"), "auto_recover": False}
    base.update(cfg)
    integ = EnhancedErrorHandlingIntegration(None, validate_config(base))
    await integ.start()
    return integ


async def test_grouping_counts_and_regression(tmp_path: Path) -> None:
    integ = await make_integ(tmp_path, regression_window=600)
    try:
        ctx = {"component": "worker", "operation": "send"}
        r1 = await integ.report_error(ConnectionResetError("Connection reset by peer at 10.0.0.7:5432 (attempt 3)"), ctx)
        r2 = await integ.report_error(ConnectionResetError("Connection reset by peer at 10.9.9.9:1 (attempt 8)"), ctx)
        r3 = await integ.report_error(ConnectionResetError("Connection reset by peer at 10.0.0.7:5432 (attempt 3)"),
                                      {"component": "scheduler", "operation": "send"})
        r4 = await integ.report_error(BrokenPipeError("Connection reset by peer at 10.0.0.7:5432 (attempt 3)"), ctx)
        assert r1.error_id == r2.error_id and r2.aggregated_count == 2
        assert len({r1.error_id, r3.error_id, r4.error_id}) == 3
        assert r1.last_seen >= r1.first_seen
        assert await integ.resolve_error(r1.error_id, "manual")
        r5 = await integ.report_error(ConnectionResetError("Connection reset by peer at 1.2.3.4:9 (attempt 1)"), ctx)
        assert r5.error_id == r1.error_id and r5.is_regression and r5.regression_count == 1
        assert r5.resolution_status == "open" and r5.aggregated_count == 3
        metrics = await integ.get_error_metrics()
        assert metrics["regressions"] == 1 and metrics["total_errors"] == 5
    finally:
        await integ.stop()


async def test_each_occurrence_row_keeps_its_own_worker_task_and_hardware(tmp_path: Path) -> None:
    """The group keeps its first occurrence's context; each stored occurrence keeps its own (a
    worker named only in related_entities counts as the occurrence's worker)."""
    integ = await make_integ(tmp_path)
    try:
        r1 = await integ.report_error("task 1 failed", {"component": "c", "worker_id": "w1", "task_id": "t1",
                                                        "hardware_id": "h1", "metadata": {"try": 1}})
        r2 = await integ.report_error("task 2 failed", {"component": "c", "worker_id": "w2", "task_id": "t2"})
        r3 = await integ.report_error("task 3 failed", {"component": "c", "related_entities": {"worker_id": "w3"}})
        assert r1.error_id == r2.error_id == r3.error_id and r3.aggregated_count == 3
        assert (r3.context.worker_id, r3.context.task_id, r3.context.hardware_id) == ("w1", "t1", "h1")
        await integ.flush()
        rows = sorted(await integ.store.occurrences(r1.error_id), key=lambda o: o.occurred_at)
        assert [(o.message, o.worker_id, o.task_id, o.hardware_id, o.metadata) for o in rows] == [
            ("task 1 failed", "w1", "t1", "h1", {"try": 1}),
            ("task 2 failed", "w2", "t2", None, None),
            ("task 3 failed", "w3", None, None, None),
        ]
    finally:
        await integ.stop()


async def test_invalid_context_values_are_kept_not_raised(tmp_path: Path) -> None:
    # issue 28 (newer than SPEC 3's "raises ValueError"): see tests/test_integrator_context.py
    integ = await make_integ(tmp_path)
    try:
        report = await integ.report_error("x", {"error_type": "bogus", "severity": "urgent"})
        assert report.context.metadata["unrecognized_context"] == {"error_type": "bogus", "severity": "urgent"}
    finally:
        await integ.stop()


async def test_seed_hooks_fire_and_bad_hooks_are_contained(tmp_path: Path) -> None:
    integ = await make_integ(tmp_path, hook_timeout=0.3)
    fired: dict[str, list[str]] = {}

    def recorder(key: str) -> Any:
        def hook(report: Any) -> None:
            fired.setdefault(key, []).append(report.error_id)
        return hook

    async def async_hook(report: Any) -> None:
        await asyncio.sleep(0.01)
        fired.setdefault("async", []).append(report.error_id)

    def raising(report: Any) -> None:
        raise RuntimeError("hook bug")

    async def hanging(report: Any) -> None:
        await asyncio.sleep(3600)

    for key in ("*", "network", "db_connection", "coordinator"):
        integ.register_error_hook(key, recorder(key))
    integ.register_error_hook("*", async_hook)
    integ.register_error_hook("*", raising)
    integ.register_error_hook("*", hanging)
    try:
        t0 = time.monotonic()
        net = await integ.report_error(ConnectionResetError("reset"), {"component": "worker"})
        elapsed = time.monotonic() - t0
        db = await integ.report_error(duckdb.ConnectionException("Connection already closed!"), {"component": "db"})
        sched = await integ.report_error("scheduler loop stalled", {"component": "scheduler"})
        state = await integ.report_error("bad", {"component": "x", "error_type": "state"})
        assert elapsed < 2.0  # the hanging hook was abandoned at hook_timeout
        await integ.error_handler.hooks.wait_idle()  # hooks run in the background (issue 26.6)
        assert fired["network"] == [net.error_id]
        assert fired["db_connection"] == [db.error_id]
        assert fired["coordinator"] == [sched.error_id, state.error_id]
        assert len(fired["*"]) == 4 and len(fired["async"]) == 4
        m = await integ.get_error_metrics()
        assert m["hook_failures"] == 4 and m["hook_timeouts"] == 4
    finally:
        await integ.stop()


async def test_hook_keys_may_be_error_types_categories_or_lists(tmp_path: Path) -> None:
    integ = await make_integ(tmp_path)
    fired: list[tuple[str, str]] = []

    def hook(name: str) -> Any:
        return lambda report: fired.append((name, report.error_type.value))

    integ.register_error_hook(ErrorType.NETWORK, hook("type"))
    integ.register_error_hook(ErrorCategory.DB_CONNECTION, hook("category"))
    integ.register_error_hook([ErrorType.TIMEOUT, "network"], hook("list"))
    for bad in ("", 5, [], [ErrorType.NETWORK, None]):
        with pytest.raises(ValueError, match="hook key"):
            integ.register_error_hook(bad, hook("bad"))  # type: ignore[arg-type]
    try:
        await integ.report_error(ConnectionResetError("reset"), {"component": "w"})
        await integ.report_error(TimeoutError("slow"), {"component": "w"})
        await integ.report_error(duckdb.ConnectionException("Connection already closed!"), {"component": "db"})
        await integ.report_error("bad input", {"component": "w", "error_type": "validation"})
        await integ.error_handler.hooks.wait_idle()
        assert sorted(fired) == [("category", "database"), ("list", "network"), ("list", "timeout"), ("type", "network")]
    finally:
        await integ.stop()


async def test_hooks_from_config(tmp_path: Path) -> None:
    integ = await make_integ(tmp_path, hooks={"network": ["tests.hooks_for_tests:record"]})
    from tests import hooks_for_tests

    hooks_for_tests.SEEN.clear()
    try:
        r = await integ.report_error(ConnectionResetError("x"), {"component": "w"})
        await integ.error_handler.hooks.wait_idle()
        assert hooks_for_tests.SEEN == [r.error_id]
    finally:
        await integ.stop()


async def test_retry_operation_counts_and_cancellation(tmp_path: Path) -> None:
    integ = await make_integ(tmp_path)
    integ.error_handler.set_retry_policy("flaky", RetryPolicy(max_retries=3, initial_delay_ms=1, max_delay_ms=5))
    calls = 0

    def always_fails() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionResetError("reset")

    try:
        result, report = await integ.retry_operation(always_fails, context={"component": "flaky"})
        assert calls == 4 and result is None and report is not None and report.retry_count == 3
        # SPEC 9: exhausted retries leave the group failed, in memory and in the database
        assert report.resolution_status == "failed" and report.retry_successful is False
        await integ.flush()
        rows = await integ.get_unresolved_errors(component="flaky")
        assert [r["resolution_status"] for r in rows] == ["failed"]
        attempts = 0

        async def then_works() -> str:
            nonlocal attempts
            attempts += 1
            if attempts < 3:
                raise ConnectionResetError("reset")
            return "ok"

        assert await integ.retry_operation(then_works, context={"component": "flaky"}) == ("ok", None)
        cancelled = 0

        async def cancelled_op() -> None:
            nonlocal cancelled
            cancelled += 1
            raise asyncio.CancelledError

        with pytest.raises(asyncio.CancelledError):
            await integ.retry_operation(cancelled_op, context={"component": "flaky"})
        assert cancelled == 1
    finally:
        await integ.stop()


def test_retry_policy_delays_are_capped_after_jitter() -> None:
    import random

    p = RetryPolicy(max_retries=10, initial_delay_ms=100, max_delay_ms=1000, backoff_factor=3, jitter=1.0)
    rng = random.Random(1)
    assert all(0 <= p.delay(n, rng) <= 1.0 for n in range(1, 11) for _ in range(50))
    with pytest.raises(ValueError, match="RetryPolicy.jitter"):
        RetryPolicy(jitter=2)


async def test_open_groups_survive_a_restart(tmp_path: Path) -> None:
    integ = await make_integ(tmp_path)
    ids = []
    for i in range(5):
        for _ in range(i + 1):
            r = await integ.report_error(f"component {i} failed: connection refused", {"component": f"c{i}"})
        ids.append(r.error_id)
    await integ.resolve_error(ids[0])
    await integ.stop()
    again = await make_integ(tmp_path)
    try:
        open_rows = {row["error_id"]: row for row in await again.get_unresolved_errors()}
        assert set(open_rows) == set(ids[1:])
        assert [open_rows[e]["aggregated_count"] for e in ids[1:]] == [2, 3, 4, 5]
        r = await again.report_error("component 3 failed: connection refused", {"component": "c3"})
        assert r.error_id == ids[3] and r.aggregated_count == 5
        high = await again.get_unresolved_errors(severity="high")
        assert all(row["error_severity"] in ("high", "critical") for row in high)
    finally:
        await again.stop()


async def test_flush_makes_reports_durable_for_another_process(tmp_path: Path) -> None:
    integ = await make_integ(tmp_path)
    for i in range(1000):
        await integ.report_error(f"error {i % 10} of kind", {"component": f"c{i % 10}"})
    await integ.flush()
    await integ.stop()
    other = DuckDBStore(str(tmp_path / "eh.duckdb"))  # what another process opening the file finds
    await other.open()
    try:
        totals = await other.totals()
    finally:
        await other.close()
    assert (totals.occurrences, totals.aggregated) == (1000, 1000)


async def test_memory_is_bounded_by_max_groups(tmp_path: Path) -> None:
    integ = await make_integ(tmp_path, max_groups_in_memory=100)
    try:
        for i in range(300):
            r = await integ.report_error(f"distinct failure kind {chr(65 + i % 26)}{chr(65 + i // 26)}",
                                         {"component": "c"})
            if i % 2:
                await integ.resolve_error(r.error_id)
        assert len(integ.error_handler.groups) <= 100
        await integ.flush()
        assert (await integ.store.totals()).groups == 300
    finally:
        await integ.stop()


def test_config_is_a_dataclass_with_defaults() -> None:
    cfg = validate_config({})
    assert isinstance(cfg, ErrorHandlingConfig) and cfg.max_recovery_level == 5 and cfg.selection == "adaptive"
