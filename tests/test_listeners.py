"""Recovery listeners tell the truth and never break a recovery: a listener that raises is logged
once and counted, an ``async def`` listener runs, and a success whose fault came back reads as a
failure in the history, in ``last_recovery`` and in the verification listener's call."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from pathlib import Path
from typing import Any

import pytest

from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration, RecoveryLevel
from coordinator_plugins.error_handling.config import validate_config
from tests.simulate import SyntheticStrategy


async def integ_of(tmp_path: Path, **cfg: Any) -> Any:
    base: dict[str, Any] = {"database": str(tmp_path / "listeners.duckdb"), "auto_recover": False,
                            "builtin_strategies": [], "escalation_backoff": 0, "seed": 3}
    base.update(cfg)
    integ = EnhancedErrorHandlingIntegration(None, validate_config(base))
    integ.add_custom_strategy("fix", SyntheticStrategy("fix", RecoveryLevel.LOW, lambda et, sid: 1.0,
                                                       random.Random(1)))
    await integ.start()
    return integ


async def test_a_listener_that_raises_never_reaches_the_caller(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    integ = await integ_of(tmp_path, verify_window=0)
    later: list[dict[str, Any]] = []
    ran: list[str] = []

    def broken(info: dict[str, Any]) -> None:
        raise KeyError("a bug in the listener")

    async def slow(info: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        ran.append(info["error_id"])

    integ.add_recovery_listener(broken)
    integ.add_recovery_listener(later.append)
    integ.add_recovery_listener(slow)
    try:
        with caplog.at_level(logging.ERROR):
            for n in range(3):
                ok, info = await integ.handle_error(f"cache index corrupt on shard {n}", {"component": "cache"})
                assert ok, info
        assert len(later) == 3  # the listeners after the broken one were still called
        assert integ.recovery_manager.outcomes.listener_failures == 3
        said = [r for r in caplog.records if "recovery listener" in r.getMessage()]
        assert len(said) == 1 and "broken" in said[0].getMessage()  # once, naming it
        deadline = time.monotonic() + 10
        while len(ran) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert ran == [info["error_id"]] * 3  # the async listener's coroutine ran
    finally:
        await integ.stop()


async def test_a_success_that_did_not_hold_reads_as_a_failure(tmp_path: Path) -> None:
    integ = await integ_of(tmp_path, verify_window=30)
    settled: list[tuple[dict[str, Any], bool]] = []
    integ.add_verification_listener(lambda entry, held: settled.append((entry, held)))
    try:
        ctx = {"component": "net", "error_type": "network", "worker_id": "w1"}
        ok, info = await integ.handle_error("link flapping on eth0", ctx)
        assert ok and info["verification"] == "pending"
        await integ.report_error("link flapping on eth0", ctx)  # the same worker again: it recurred
        assert [held for _, held in settled] == [False]
        entry = settled[0][0]
        assert entry["success"] is False and entry["verification"] == "recurred"
        assert [a["verification"] for a in entry["attempts"]] == ["recurred"]
        [group] = [g for g in await integ.get_unresolved_errors() if g["error_id"] == info["error_id"]]
        assert group["recovery_details"]["last_recovery"]["success"] is False
        hist = await integ.get_recovery_history(info["error_id"])
        assert hist is not None and hist["history"][-1]["success"] is False
    finally:
        await integ.stop()


async def test_a_success_that_held_says_so_in_its_attempts(tmp_path: Path) -> None:
    integ = await integ_of(tmp_path, verify_window=0.2)
    settled: list[bool] = []
    integ.add_verification_listener(lambda entry, held: settled.append(held))
    try:
        ok, info = await integ.handle_error("disk quota exceeded on /var", {"component": "disk"})
        assert ok
        deadline = time.monotonic() + 10
        while not settled and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert settled == [True]
        hist = await integ.get_recovery_history(info["error_id"])
        assert hist is not None
        entry = hist["history"][-1]
        assert entry["success"] is True and entry["verification"] == "held"
        assert [a["verification"] for a in entry["attempts"]] == ["held"]
    finally:
        await integ.stop()


async def test_two_failing_listeners_of_one_name_are_each_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    integ = await integ_of(tmp_path, verify_window=0)
    integ.add_recovery_listener(lambda info: 1 / 0)
    integ.add_recovery_listener(lambda info: [][1])
    try:
        with caplog.at_level(logging.ERROR):
            for n in range(2):
                ok, _ = await integ.handle_error(f"cache index corrupt on shard {n}", {"component": "cache"})
                assert ok
        said = [r for r in caplog.records if "recovery listener" in r.getMessage()]
        assert [r.exc_info[0] for r in said if r.exc_info] == [ZeroDivisionError, IndexError]
        assert integ.recovery_manager.outcomes.listener_failures == 4
    finally:
        await integ.stop()
