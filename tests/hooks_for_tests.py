"""A hook module named by dotted path in a config test."""

from typing import Any

SEEN: list[str] = []


def record(report: Any) -> None:
    SEEN.append(report.error_id)
