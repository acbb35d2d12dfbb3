"""Writing a group: its current state queued in the store, and the number of that write kept by
the index (an evicted group's lookup waits for it, see :mod:`.lookup`). Intake writes groups as
occurrences change them; recovery and resolutions write them through the same
:meth:`GroupWriter.persist`."""

from __future__ import annotations

from coordinator_plugins.error_handling.intake.group import GroupIndex
from coordinator_plugins.error_handling.model import ErrorReport
from coordinator_plugins.error_handling.storage.base import Store
from coordinator_plugins.error_handling.storage.records import GroupRecord


class GroupWriter:
    def __init__(self, store: Store, groups: GroupIndex) -> None:
        self.store = store
        self.groups = groups

    def persist(self, report: ErrorReport) -> int:
        """Queue the group's current state for writing; returns the write's number."""
        self.groups.mark(report)
        seq = self.store.save_group(GroupRecord.of(report))
        report.persisted = True
        self.groups.written(report, seq)  # an evicted group's lookup waits for this write
        return seq
