"""Values read from a seed-written database, made safe to write, and the report of a migration."""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

logger = logging.getLogger(__name__)
_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")
_LOGGED_SKIPS = 20


@dataclass
class SeedMigrationReport:
    """What a migration read, wrote and skipped, per seed table."""

    read: dict[str, int] = field(default_factory=dict)
    migrated: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    repaired: int = 0
    groups: int = 0
    open_groups: int = 0
    merged_errors: int = 0
    aliases: int = 0
    skip_reasons: list[str] = field(default_factory=list)
    migrated_at: str = ""

    def skip(self, table: str, key: Any, reason: str) -> None:
        self.skipped[table] = self.skipped.get(table, 0) + 1
        line = f"{table} {str(key)[:80]!r}: {reason}"
        if len(self.skip_reasons) < _LOGGED_SKIPS:
            self.skip_reasons.append(line)
        logger.warning("seed migration: skipped %s", line)

    def ok(self, table: str, n: int = 1) -> None:
        self.migrated[table] = self.migrated.get(table, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return {
            "migrated_at": self.migrated_at,
            "read": self.read,
            "migrated": self.migrated,
            "skipped": self.skipped,
            "repaired_values": self.repaired,
            "groups": self.groups,
            "open_groups": self.open_groups,
            "merged_errors": self.merged_errors,
            "aliases": self.aliases,
            "skip_reasons": self.skip_reasons,
        }


def text(value: Any) -> str | None:
    """A string DuckDB accepts (lone surrogates from JSON escapes replaced), or None."""
    if value is None:
        return None
    s = value if isinstance(value, str) else str(value)
    return s.encode("utf-8", "replace").decode("utf-8")


def parse_json(value: Any, report: SeedMigrationReport) -> Any:
    if value is None or isinstance(value, dict | list):
        return value
    try:
        return json.loads(value)
    except (ValueError, TypeError, RecursionError):
        report.repaired += 1
        return None


def parse_dict(value: Any, report: SeedMigrationReport) -> dict[str, Any]:
    parsed = parse_json(value, report)
    return parsed if isinstance(parsed, dict) else {}


def utc(value: Any) -> datetime | None:
    """The seed wrote ``datetime.now()``: naive local time. Aware values are kept."""
    try:
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if isinstance(value, datetime):
            return value.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        pass
    return None


def number(value: Any, default: float, lo: float = 0.0, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return default
    return min(hi, max(lo, float(value)))


def count(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def exception_type_of(stack: str | None) -> str | None:
    """The class name of the exception whose traceback the seed kept (its last line)."""
    lines = [ln for ln in (stack or "").strip().splitlines() if ln.strip()]
    m = _EXC_LINE.match(lines[-1].strip()) if lines else None
    return m.group(1).rsplit(".", 1)[-1] if m else None


def enum_of(cls: Any, value: Any) -> Any:
    try:
        return cls(value)
    except ValueError:
        return None
