"""Error groups and their occurrences as they cross the storage seam: frozen snapshots, taken on
the event loop.

A store never sees a live :class:`ErrorReport` (the loop keeps changing it while the writer
works): the caller takes a :class:`GroupRecord` with :meth:`GroupRecord.of` and hands that over.
Every record names its fields; no caller knows a table's column order. Mappings inside a record
(metadata, recovery details, histories) are copies made when the snapshot is taken and are never
changed afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from coordinator_plugins.error_handling.model import (
    LIST_ITEM_FIELDS,
    ErrorCategory,
    ErrorContext,
    ErrorReport,
    ErrorSeverity,
    ErrorType,
    ResolutionStatus,
    iso,
)

# The fields of an item of GET /errors: the SPEC's list fields and a few more.
LIST_FIELDS = (
    *LIST_ITEM_FIELDS,
    "worker_id",
    "task_id",
    "hardware_id",
    "exception_type",
    "resolution_strategy",
    "resolution_time",
    "regression_count",
)


def _status(value: Any) -> ResolutionStatus:
    """``ResolutionStatus(value)`` without the Enum call when it is one already (it always is)."""
    return value if type(value) is ResolutionStatus else ResolutionStatus(value)


def _public_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """Recovery details without the private keys (``_operation`` holds a callable)."""
    return {k: v for k, v in details.items() if not k.startswith("_")} if details else {}


@dataclass(frozen=True, slots=True)
class OccurrenceRecord:
    """One occurrence of a group, appended (never changed)."""

    error_id: str
    occurred_at: datetime
    message: str
    worker_id: str | None = None
    task_id: str | None = None
    hardware_id: str | None = None
    metadata: Mapping[str, Any] | None = None

    @classmethod
    def of(
        cls,
        report: ErrorReport,
        message: str,
        metadata: Mapping[str, Any] | None,
        where: Mapping[str, str | None] | None = None,
    ) -> OccurrenceRecord:
        """One per report, on the loop: built through the slots (a frozen dataclass's __init__ sets
        each field through object.__setattr__, twice the cost); the same record as ``cls(...)``.
        ``where``: this occurrence's ``worker_id``, ``task_id`` and ``hardware_id`` (a later
        occurrence of a group comes from anywhere); without it, those of the group's context."""
        if where is None:
            c = report.context
            worker, task, hardware = c.worker_id, c.task_id, c.hardware_id
        else:
            worker, task, hardware = where.get("worker_id"), where.get("task_id"), where.get("hardware_id")
        o = _new(cls)
        _set_id(o, report.error_id)
        _set_at(o, report.last_seen)
        _set_msg(o, message)
        _set_worker(o, worker)
        _set_task(o, task)
        _set_hw(o, hardware)
        _set_md(o, dict(metadata) if metadata else None)
        return o

    def to_api(self) -> dict[str, Any]:
        return {
            "error_id": self.error_id,
            "occurred_at": iso(self.occurred_at),
            "message": self.message,
            "worker_id": self.worker_id,
            "task_id": self.task_id,
            "hardware_id": self.hardware_id,
            "metadata": dict(self.metadata) if self.metadata else None,
        }


_new = object.__new__
_set_id, _set_at, _set_msg, _set_worker, _set_task, _set_hw, _set_md = (
    getattr(OccurrenceRecord, name).__set__  # the slots' own setters
    for name in ("error_id", "occurred_at", "message", "worker_id", "task_id", "hardware_id", "metadata")
)
assert tuple(OccurrenceRecord.__dataclass_fields__) == (
    "error_id", "occurred_at", "message", "worker_id", "task_id", "hardware_id", "metadata")


@dataclass(frozen=True, slots=True)
class AliasRecord:
    """Another id that names a group: a seed error folded into the group on migration (its
    ``relation``, and what the seed kept of that error in ``details``: its time, status, context
    and recovery details). ``GET /errors/{alias_id}`` and every call taking an error id answer
    for the group ``error_id``."""

    alias_id: str
    error_id: str
    relation: str = "merged"
    details: Mapping[str, Any] | None = None

    def to_api(self) -> dict[str, Any]:
        return {"error_id": self.alias_id, "group_id": self.error_id, "relation": self.relation,
                "details": dict(self.details) if self.details else {}}


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """An error group's state at one moment.

    ``stored`` is False while the group has never been handed to the store: the store writes
    such a group together with its first occurrence (they are durable together). The count is
    never written from a snapshot over a stored one: each occurrence adds one (see
    ``Store.record_occurrence``), so two writers of one group cannot lose each other's counts.
    """

    error_id: str
    fingerprint: str
    error_type: ErrorType
    error_severity: ErrorSeverity
    category: ErrorCategory
    message: str
    component: str
    operation: str
    worker_id: str | None
    task_id: str | None
    hardware_id: str | None
    exception_type: str | None
    stack_trace: str | None
    metadata: Mapping[str, Any]
    first_seen: datetime
    last_seen: datetime
    aggregated_count: int
    retry_count: int
    retry_successful: bool | None
    resolution_status: ResolutionStatus
    resolution_time: datetime | None
    resolution_strategy: str | None
    regression_count: int
    recovery_level: int
    recovery_details: Mapping[str, Any]
    stored: bool = True

    @property
    def severity_rank(self) -> int:
        return self.error_severity.rank

    @classmethod
    def of(cls, r: ErrorReport) -> GroupRecord:
        """Snapshot ``r`` (on the loop). ``stored`` is ``r.persisted``: the caller sets that once
        the store has the group queued."""
        c = r.context
        values = (
            r.error_id, r.fingerprint, r.error_type, r.error_severity, r.category, r.message, c.component,
            c.operation, c.worker_id, c.task_id, c.hardware_id, r.exception_type, c.stack_trace,
            dict(c.metadata) if c.metadata else {}, r.first_seen, r.last_seen, r.aggregated_count, r.retry_count,
            r.retry_successful, _status(r.resolution_status), r.resolution_time, r.resolution_strategy,
            r.regression_count, r.recovery_level, _public_details(r.recovery_details), r.persisted,
        )
        # Through the slots' own setters, as OccurrenceRecord.of: a frozen dataclass's __init__
        # sets each of the 26 fields through object.__setattr__ by name, about 5 us a snapshot
        # against 2.3 (one per new or changed group, on the loop); the same record as
        # ``cls(*values)``.
        o = _new(cls)
        for setter, value in zip(_GROUP_SETTERS, values, strict=True):
            setter(o, value)
        return o

    @classmethod
    def from_stored(
        cls,
        row: Mapping[str, Any],
        *,
        metadata: Mapping[str, Any],
        recovery_details: Mapping[str, Any],
        first_seen: datetime,
        last_seen: datetime,
        resolution_time: datetime | None,
        empty_count: int,
    ) -> GroupRecord:
        """A stored group row (of any store, by column name) as a record. The columns every store
        keeps alike are read here; those a store keeps its own way (JSON, times) come converted,
        and ``empty_count`` is what a NULL count reads as. ValueError for an unknown enum value."""
        return cls(
            error_id=row["error_id"],
            fingerprint=row["fingerprint"] or "",
            error_type=ErrorType(row["error_type"]),
            error_severity=ErrorSeverity(row["error_severity"]),
            category=ErrorCategory(row["category"]),
            message=row["message"] or "",
            component=row["component"] or "unknown",
            operation=row["operation"] or "unknown",
            worker_id=row["worker_id"],
            task_id=row["task_id"],
            hardware_id=row["hardware_id"],
            exception_type=row["exception_type"],
            stack_trace=row["stack_trace"],
            metadata=metadata,
            first_seen=first_seen,
            last_seen=last_seen,
            aggregated_count=int(row["aggregated_count"] or empty_count),
            retry_count=int(row["retry_count"] or 0),
            retry_successful=row["retry_successful"],
            resolution_status=ResolutionStatus(row["resolution_status"] or "open"),
            resolution_time=resolution_time,
            resolution_strategy=row["resolution_strategy"],
            regression_count=int(row["regression_count"] or 0),
            recovery_level=int(row["recovery_level"] or 1),
            recovery_details=recovery_details,
            stored=True,
        )

    def to_report(self) -> ErrorReport:
        """A live report of this state (restored at startup, or read back for a resolution)."""
        return ErrorReport(
            error_id=self.error_id,
            error_type=self.error_type,
            error_severity=self.error_severity,
            message=self.message,
            context=ErrorContext(
                component=self.component,
                operation=self.operation,
                worker_id=self.worker_id,
                task_id=self.task_id,
                hardware_id=self.hardware_id,
                stack_trace=self.stack_trace,
                metadata=dict(self.metadata),
            ),
            category=self.category,
            fingerprint=self.fingerprint,
            exception_type=self.exception_type,
            retry_count=self.retry_count,
            retry_successful=self.retry_successful,
            aggregated_count=self.aggregated_count,
            resolution_status=self.resolution_status,
            resolution_time=self.resolution_time,
            resolution_strategy=self.resolution_strategy,
            recovery_details=dict(self.recovery_details),
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            regression_count=self.regression_count,
            recovery_level=self.recovery_level,
            new_group=False,
            persisted=True,
        )

    def to_api(self, fields: Sequence[str] | None = None) -> dict[str, Any]:
        """The JSON shape of GET /errors/{id} (every field), or of a list item (``LIST_FIELDS``)."""
        out: dict[str, Any] = {}
        for name in fields or API_FIELDS:
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = iso(value)
            elif isinstance(value, ErrorType | ErrorSeverity | ErrorCategory | ResolutionStatus):
                value = value.value
            elif isinstance(value, Mapping):
                value = dict(value)
            out[name] = value
        return out


# Every field of a group as the API shows it (the record's fields but ``stored``).
API_FIELDS = tuple(n for n in GroupRecord.__dataclass_fields__ if n != "stored")


_GROUP_SETTERS = tuple(getattr(GroupRecord, name).__set__ for name in GroupRecord.__dataclass_fields__)
