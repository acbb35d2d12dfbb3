"""Values and rows as the PostgreSQL store writes them: text and JSON PostgreSQL accepts, aware
times, and the row of each record for the statements of ``schema.py``."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from coordinator_plugins.error_handling.storage.records import (
    GroupRecord,
    LearnerRecord,
    LevelRecord,
    OccurrenceRecord,
    StrategyRun,
    StrategyScore,
    TimeoutRecord,
)

_LONE_SURROGATE = re.compile(r"\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f])|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f][0-9a-f]{2}",
                             re.IGNORECASE)


def clean_text(value: str | None) -> str | None:
    """Text PostgreSQL accepts: no NUL character, no lone surrogate (both are refused)."""
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def to_json(value: Any) -> str:
    """JSON text jsonb accepts (it refuses \\u0000 and unpaired surrogate escapes)."""
    text = json.dumps(value, default=str, separators=(",", ":"))
    if "\\u" in text:
        text = text.replace("\\u0000", "\\ufffd")
        if "\\ud" in text.lower():
            text = _LONE_SURROGATE.sub("\\\\ufffd", text)
    return text


def from_json(value: Any, default: Any = None) -> Any:
    if value is None:
        return default
    if isinstance(value, str):
        return json.loads(value)
    return value


def as_utc(ts: datetime) -> datetime:
    """An aware time (asyncpg refuses a naive one for timestamptz): a naive one is taken as UTC."""
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Transpose rows into per-column lists for an ``unnest($n)`` statement."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(c) for c in zip(*rows, strict=True)]


def group_row(g: GroupRecord, added: int) -> tuple[Any, ...]:
    """The row of ``schema.GROUP_COLUMNS``; its count is ``added``, the occurrences this commit adds."""
    return (
        g.error_id, g.fingerprint, g.error_type.value, g.error_severity.value, g.severity_rank, g.category.value,
        clean_text(g.message), clean_text(g.component), clean_text(g.operation), clean_text(g.worker_id),
        clean_text(g.task_id), clean_text(g.hardware_id), clean_text(g.exception_type), clean_text(g.stack_trace),
        to_json(dict(g.metadata)), as_utc(g.first_seen), as_utc(g.last_seen), added, g.retry_count,
        g.retry_successful, g.resolution_status.value,
        as_utc(g.resolution_time) if g.resolution_time else None, g.resolution_strategy, g.regression_count,
        g.recovery_level, to_json(dict(g.recovery_details)),
    )


def occurrence_row(o: OccurrenceRecord, coordinator_id: str | None) -> tuple[Any, ...]:
    """The row of ``schema.OCC_COLUMNS``."""
    return (o.error_id, as_utc(o.occurred_at), clean_text(o.message), clean_text(o.worker_id),
            clean_text(o.task_id), clean_text(o.hardware_id), to_json(dict(o.metadata)) if o.metadata else None,
            coordinator_id)


def run_row(r: StrategyRun, coordinator_id: str | None) -> tuple[Any, ...]:
    """The row of ``schema.RUN_COLUMNS``."""
    return (r.strategy_id, r.strategy_name, r.error_type, float(r.execution_time), bool(r.success),
            as_utc(r.timestamp), r.hardware_id, r.affected_tasks, r.recovered_tasks, to_json(dict(r.resource_usage)),
            float(r.impact_score), float(r.stability_score), to_json(dict(r.context)), r.error_id, r.level,
            r.outcome, coordinator_id)


def level_row(level: LevelRecord) -> tuple[Any, ...]:
    return (level.error_id, level.level, as_utc(level.updated_at), to_json([dict(h) for h in level.history]))


def score_row(score: StrategyScore) -> tuple[Any, ...]:
    return (score.key, score.strategy_id, score.score, as_utc(score.updated_at), score.samples,
            to_json(dict(score.metrics)))


def timeout_row(timeout: TimeoutRecord) -> tuple[Any, ...]:
    return (timeout.error_type, timeout.strategy_id, timeout.timeout, as_utc(timeout.updated_at), timeout.srtt,
            timeout.rttvar, timeout.samples)


def learner_row(state: LearnerRecord) -> tuple[Any, ...]:
    return (state.key, to_json(dict(state.state)), as_utc(state.updated_at))
