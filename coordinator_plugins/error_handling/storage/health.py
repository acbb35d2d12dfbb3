"""What both stores' writers keep of their health: the counters, the failure state, and the part
of :class:`StoreStatus` read from them. Each store holds one and hands it to its writer."""

from __future__ import annotations

import time
from typing import Any


class Health:
    """Written by the store's writer (and its reconnects), read for the store's status."""

    def __init__(self) -> None:
        self.failing_since: float | None = None  # monotonic time of the first failure since the last commit
        self.last_error: str | None = None
        self.commits = 0
        self.rows_written = 0
        self.dropped_writes = 0
        self.reconnects = 0

    def failed(self, exc: BaseException) -> bool:
        """Record a failed write; True the first time since the store last wrote (the caller
        says so once: log, ``on_error``)."""
        first = self.failing_since is None
        if first:
            self.failing_since = time.monotonic()
        self.last_error = f"{type(exc).__name__}: {exc}"
        return first

    def committed(self, rows: int) -> bool:
        """Record a commit of ``rows`` rows; True when the store was failing until now."""
        was_failing = self.failing_since is not None
        self.commits += 1
        self.rows_written += rows
        self.failing_since = None
        return was_failing

    def failing_for(self) -> float:
        """Seconds since the writes started failing (0 while they work)."""
        return (time.monotonic() - self.failing_since) if self.failing_since else 0.0

    def fields(
        self, pending_writes: int, queued_occurrences: int, dropped_occurrences: int, schema_version: int,
        skipped_rows: int,
    ) -> dict[str, Any]:
        """The fields of :class:`StoreStatus` every store reads alike, with the store's own counts."""
        return {
            "pending_writes": pending_writes,
            "queued_occurrences": queued_occurrences,
            "dropped_occurrences": dropped_occurrences,
            "dropped_writes": self.dropped_writes,
            "commits": self.commits,
            "rows_written": self.rows_written,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "failing_for_seconds": self.failing_for(),
            "schema_version": schema_version,
            "skipped_rows": skipped_rows,
        }
