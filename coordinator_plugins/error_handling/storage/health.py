"""What both stores' writers keep of their health: the counters, the failure state, and the part
of :class:`StoreStatus` read from them. Mixed into each store's writer."""

from __future__ import annotations

import time
from typing import Any


class WriteHealth:
    failing_since: float | None
    last_error: str | None
    _seq: int
    _committed: int
    _occ_pending: int
    dropped_occurrences: int
    dropped_writes: int
    commits: int
    rows_written: int
    reconnects: int
    schema_version: int
    skipped_rows: int

    def _note_failure(self, exc: BaseException) -> bool:
        """Record a failed write; True the first time since the store last wrote (the caller
        says so once: log, ``on_error``)."""
        first = self.failing_since is None
        if first:
            self.failing_since = time.monotonic()
        self.last_error = f"{type(exc).__name__}: {exc}"
        return first

    def _health_fields(self) -> dict[str, Any]:
        """The fields of :class:`StoreStatus` every store reads alike."""
        return {
            "pending_writes": self._seq - self._committed,
            "queued_occurrences": self._occ_pending,
            "dropped_occurrences": self.dropped_occurrences,
            "dropped_writes": self.dropped_writes,
            "commits": self.commits,
            "rows_written": self.rows_written,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "failing_for_seconds": (time.monotonic() - self.failing_since) if self.failing_since else 0.0,
            "schema_version": self.schema_version,
            "skipped_rows": self.skipped_rows,
        }
