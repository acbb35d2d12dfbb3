"""Issue 28 item 2: an error handler never raises because of a context value.

``report_error`` and ``handle_error`` are called inside the caller's own ``except`` block, with
whatever the caller's framework puts in the context (the seed's callers pass free-form
``error_type`` values such as ``"coordinator"``). A value the plugin cannot use is left out of
classification, kept in the report's metadata under ``unrecognized_context``, and logged as a
WARNING once per distinct value."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from coordinator_plugins.error_handling import EnhancedErrorHandlingIntegration

LOGGER = "coordinator_plugins.error_handling.intake.context"

# (key, a value the plugin cannot use): every enum-like or shaped key of the context
BAD_VALUES: list[tuple[str, Any]] = [
    ("error_type", "coordinator"),  # the seed's callers' free-form value
    ("error_type", 5),
    ("error_type", ["network"]),  # unhashable
    ("severity", "urgent"),
    ("severity", {"level": 3}),
    ("critical", "maybe"),
    ("high_priority", {"yes": 1}),
    ("low_priority", [1]),
    ("metadata", "not a dict"),
    ("related_entities", "w1"),
    ("related_entities", 42),
]


async def _integ(tmp_path: Path) -> EnhancedErrorHandlingIntegration:
    integ = EnhancedErrorHandlingIntegration(None, {"database": str(tmp_path / "eh.duckdb"), "auto_recover": False})
    await integ.start()
    return integ


def _warnings(caplog: pytest.LogCaptureFixture, key: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == logging.WARNING and r.getMessage().startswith(f"context.{key}")]


@pytest.mark.parametrize("key, value", BAD_VALUES)
async def test_a_bad_context_value_is_kept_and_warned_once_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, key: str, value: Any
) -> None:
    integ = await _integ(tmp_path)
    caplog.set_level(logging.WARNING, LOGGER)
    try:
        ctx = {"component": "scheduler", "operation": "assign", key: value}
        try:
            raise ConnectionResetError("peer reset")
        except ConnectionResetError as exc:  # where a caller reports: inside its own except block
            first = await integ.report_error(exc, dict(ctx))
            ok, info = await integ.handle_error(exc, dict(ctx))
            again = await integ.report_error(exc, dict(ctx))
        # classified by everything else: the exception's class
        assert first.error_type.value == "network" and first.category.value == "connection"
        assert first.error_id == again.error_id == info["error_id"] and again.aggregated_count == 3
        assert isinstance(ok, bool)
        # the raw value is kept in the report, and in the stored occurrences
        kept = first.context.metadata["unrecognized_context"][key]
        assert kept == value or kept == repr(value) or kept == list(value)
        await integ.flush()
        rows = await integ.store.occurrences(first.error_id)
        assert len(rows) == 3 and all(r.metadata and key in r.metadata["unrecognized_context"] for r in rows)
        # one warning for this value, however many reports carried it; it names the key
        assert len(_warnings(caplog, key)) == 1, _warnings(caplog, key)
        assert (await integ.get_error_metrics())["unrecognized_context_values"] == 3
    finally:
        await integ.stop()


async def test_each_distinct_unknown_value_is_warned_once_and_good_keys_still_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    integ = await _integ(tmp_path)
    caplog.set_level(logging.WARNING, LOGGER)
    try:
        for _ in range(5):
            for value in ("coordinator", "worker_pool", "coordinator"):
                await integ.report_error("queue stalled", {"component": "scheduler", "error_type": value})
        lines = _warnings(caplog, "error_type")
        assert len(lines) == 2 and "'coordinator'" in lines[0] and "'worker_pool'" in lines[1]
        assert "network, resource" in lines[0]  # the accepted values: the fix
        # a good severity next to a bad error_type still sets the severity, and metadata is kept
        report = await integ.report_error(ConnectionResetError("reset"), {
            "component": "api", "error_type": "coordinator", "severity": "critical", "metadata": {"try": 1}})
        assert report.error_severity.value == "critical" and report.error_type.value == "network"
        assert report.context.metadata == {"try": 1, "unrecognized_context": {"error_type": "coordinator"}}
    finally:
        await integ.stop()


async def test_a_value_that_cannot_even_be_printed_is_kept_by_its_type(tmp_path: Path) -> None:
    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    integ = await _integ(tmp_path)
    try:
        report = await integ.report_error("boom", {"component": "c", "severity": Unprintable()})
        assert report.context.metadata["unrecognized_context"]["severity"] == "<Unprintable>"
        await integ.flush()
    finally:
        await integ.stop()
