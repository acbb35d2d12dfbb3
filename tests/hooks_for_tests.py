"""A hook module named by dotted path in a config test."""

from typing import Any

SEEN: list[str] = []


def record(report: Any) -> None:
    SEEN.append(report.error_id)


def hang(report: Any) -> None:
    """A hook that never returns in practice: it marks the file named by $HOOK_ENTERED, then sleeps."""
    import os
    import time

    marker = os.environ.get("HOOK_ENTERED")
    if marker:
        with open(marker, "a") as f:
            f.write(report.error_id + "\n")
    time.sleep(3600)
