"""The error model: types, severities, categories, context and the report of one error group."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class ErrorType(enum.Enum):
    """The broad kind of an error (the seed design's 21 values)."""

    NETWORK = "network"
    RESOURCE = "resource"
    HARDWARE = "hardware"
    SYSTEM = "system"
    DATABASE = "database"
    DEPENDENCY = "dependency"
    TIMEOUT = "timeout"
    VALIDATION = "validation"
    ASSERTION = "assertion"
    CONFIGURATION = "configuration"
    AUTHENTICATION = "authentication"
    AUTHORIZATION = "authorization"
    WORKER = "worker"
    COORDINATION = "coordination"
    SCHEDULING = "scheduling"
    STATE = "state"
    TEST_SETUP = "test_setup"
    TEST_EXECUTION = "test_execution"
    TEST_TEARDOWN = "test_teardown"
    TEST_ENVIRONMENT = "test_environment"
    UNKNOWN = "unknown"


_SEVERITY_ORDER = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


class ErrorSeverity(enum.Enum):
    """How bad an error is. Compares by order: INFO < LOW < MEDIUM < HIGH < CRITICAL."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_ORDER[self.value]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, ErrorSeverity):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, ErrorSeverity):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, ErrorSeverity):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, ErrorSeverity):
            return NotImplemented
        return self.rank >= other.rank


class ErrorCategory(enum.Enum):
    """The finer kind of an error that recovery dispatches on."""

    CONNECTION = "connection"
    TIMEOUT = "timeout"
    WORKER_OFFLINE = "worker_offline"
    WORKER_CRASH = "worker_crash"
    WORKER_RESOURCE = "worker_resource"
    WORKER_HANG = "worker_hang"
    TASK_TIMEOUT = "task_timeout"
    TASK_ERROR = "task_error"
    TASK_RESOURCE = "task_resource"
    DB_CONNECTION = "db_connection"
    DB_QUERY = "db_query"
    DB_INTEGRITY = "db_integrity"
    DB_LOCKED = "db_locked"
    COORDINATOR_ERROR = "coordinator_error"
    STATE_ERROR = "state_error"
    COORDINATOR_CRASH = "coordinator_crash"
    SCHEDULER_STALLED = "scheduler_stalled"
    AUTH_ERROR = "auth_error"
    UNAUTHORIZED = "unauthorized"
    SYSTEM_RESOURCE = "system_resource"
    DISK_FULL = "disk_full"
    SYSTEM_OVERLOAD = "system_overload"
    DEPENDENCY = "dependency"
    CONFIGURATION = "configuration"
    VALIDATION = "validation"
    TEST_FAILURE = "test_failure"
    UNKNOWN = "unknown"

    @property
    def family(self) -> str:
        """The part before the first ``_`` (``db``, ``worker``, ``task``, ``system`` ...)."""
        return self.value.split("_", 1)[0]


class ResolutionStatus(enum.StrEnum):
    """Where an error group is in its lifecycle. A ``str``, so it compares equal to its value.

    ``open`` (new, or reopened by a regression), ``retrying`` (a recovery or retry is running),
    ``resolved`` (fixed, by recovery or by hand), ``failed`` (recovery ran and did not fix it)."""

    OPEN = "open"
    RETRYING = "retrying"
    RESOLVED = "resolved"
    FAILED = "failed"


# The fields every item of GET /errors carries (SPEC section 5).
LIST_ITEM_FIELDS = (
    "error_id",
    "error_type",
    "error_severity",
    "category",
    "message",
    "component",
    "operation",
    "first_seen",
    "last_seen",
    "aggregated_count",
    "retry_count",
    "resolution_status",
    "recovery_level",
)
MAX_TARGETS = 200
MAX_TASK_FAILURES = 20


def enum_member(enum_cls: Any, name: str, value: Any) -> Any:
    """The member of ``enum_cls`` that ``value`` is or names; a ValueError naming ``name`` and the
    accepted values otherwise. None stays None."""
    if value is None or isinstance(value, enum_cls):
        return value
    try:
        return enum_cls(value)
    except ValueError:
        accepted = ", ".join(m.value for m in enum_cls)
        raise ValueError(f"{name}: {value!r} is not one of {accepted}") from None


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime | None) -> str | None:
    """ISO-8601 UTC with microseconds, or None."""
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(slots=True)
class ErrorContext:
    """Where an error happened."""

    component: str = "unknown"
    operation: str = "unknown"
    timestamp: datetime = field(default_factory=utcnow)
    user_id: str | None = None
    worker_id: str | None = None
    task_id: str | None = None
    hardware_id: str | None = None
    request_id: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    stack_trace: str | None = None
    related_entities: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, weakref_slot=True)
class ErrorReport:
    """One error group: the first occurrence's details plus counts and lifecycle.

    ``error_id`` names the group; every occurrence whose fingerprint matches an open group
    gets that group's id.
    """

    error_id: str
    error_type: ErrorType
    error_severity: ErrorSeverity
    message: str
    context: ErrorContext
    category: ErrorCategory = ErrorCategory.UNKNOWN
    fingerprint: str = ""
    exception_type: str | None = None
    exception: BaseException | None = None
    retry_count: int = 0
    retry_successful: bool | None = None
    aggregated_count: int = 1
    related_errors: list[str] = field(default_factory=list)
    resolution_status: ResolutionStatus = ResolutionStatus.OPEN
    resolution_time: datetime | None = None
    resolution_strategy: str | None = None
    recovery_details: dict[str, Any] = field(default_factory=dict)
    first_seen: datetime = field(default_factory=utcnow)
    last_seen: datetime = field(default_factory=utcnow)
    regression_count: int = 0
    recovery_level: int = 1
    # Set on the report that report_error returns: did this occurrence open a new group?
    new_group: bool = True
    is_regression: bool = False
    # True once the group's full row is in the database (only the store's writer sets it).
    persisted: bool = False
    # Workers and tasks that occurrences named since the group's last recovery started, and the
    # latest occurrence's metadata: what the next recovery acts on (not persisted).
    target_workers: list[str] = field(default_factory=list)
    target_tasks: list[str] = field(default_factory=list)
    latest_metadata: dict[str, Any] | None = None
    # Per task the group's occurrences named, the worker of each (None when unnamed): one task
    # failing the same way (one group) on several workers is the task's problem (not persisted).
    task_failures: dict[str, list[str | None]] = field(default_factory=dict)
    # What the group index counted this group as (bit 0 open, bit 1 open critical; -1 nothing).
    counted: int = -1
    # The store's number of the latest write queued for this group (0: none yet; not persisted).
    write_seq: int = 0

    def add_targets(self, worker_id: str | None, task_id: str | None, metadata: dict[str, Any] | None) -> None:
        if worker_id and worker_id not in self.target_workers and len(self.target_workers) < MAX_TARGETS:
            self.target_workers.append(worker_id)
        if task_id and task_id not in self.target_tasks and len(self.target_tasks) < MAX_TARGETS:
            self.target_tasks.append(task_id)
        if task_id:
            seen = self.task_failures.get(task_id)
            if seen is None:
                if len(self.task_failures) >= MAX_TARGETS:  # forget the task seen first
                    del self.task_failures[next(iter(self.task_failures))]
                seen = self.task_failures[task_id] = []
            if len(seen) < MAX_TASK_FAILURES:
                seen.append(worker_id)
        if metadata:
            self.latest_metadata = metadata

    def take_targets(self) -> tuple[list[str], list[str], dict[str, Any] | None]:
        out = (self.target_workers, self.target_tasks, self.latest_metadata)
        self.target_workers, self.target_tasks, self.latest_metadata = [], [], None
        return out

    @property
    def has_targets(self) -> bool:
        return bool(self.target_workers or self.target_tasks)

    @property
    def is_open(self) -> bool:
        return self.resolution_status is not ResolutionStatus.RESOLVED

    # -- lifecycle: the only places that change resolution_status --------------------------
    def resolve(self, strategy: str | None, at: datetime | None = None) -> None:
        """Resolved (by ``strategy``, or by hand): the level returns to 1."""
        self.resolution_status = ResolutionStatus.RESOLVED
        self.resolution_time = at or utcnow()
        self.resolution_strategy = strategy
        self.recovery_level = 1

    def reopen(self, regression: bool = True) -> None:
        """Open again; a regression when it had been resolved."""
        if regression and self.resolution_status is ResolutionStatus.RESOLVED:
            self.regression_count += 1
        self.resolution_status = ResolutionStatus.OPEN
        self.resolution_time = None

    def retrying(self) -> None:
        """A recovery or a retry of this group is running."""
        self.resolution_status = ResolutionStatus.RETRYING

    def fail(self) -> None:
        """Recovery ran and did not fix it."""
        self.resolution_status = ResolutionStatus.FAILED
