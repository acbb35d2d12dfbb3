"""The error handler: classify -> group -> persist -> hooks, plus the retry runner."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import random
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from coordinator_plugins.error_handling.intake.context import (
    MAX_METADATA_BYTES,
    ContextReader,
    context_strings,
    related_targets,
)
from coordinator_plugins.error_handling.intake.group import GroupIndex
from coordinator_plugins.error_handling.intake.hooks import Hook, HookKey, HookRegistry
from coordinator_plugins.error_handling.intake.identify import identify
from coordinator_plugins.error_handling.intake.lookup import StoredGroups
from coordinator_plugins.error_handling.intake.persist import GroupWriter
from coordinator_plugins.error_handling.intake.retry import RetryPolicy, is_never_retried
from coordinator_plugins.error_handling.model import (
    ErrorContext,
    ErrorReport,
    ErrorSeverity,
    ResolutionStatus,
    enum_member,
)
from coordinator_plugins.error_handling.storage.base import Store
from coordinator_plugins.error_handling.storage.records import (
    GroupRecord,
    IdempotencyRecord,
    LevelRecord,
    OccurrenceRecord,
    StoredState,
)
from coordinator_plugins.error_handling.text import storable

logger = logging.getLogger(__name__)
_TICK = timedelta(microseconds=1)
_now = datetime.now  # model.utcnow() without its call
_RESOLVED = ResolutionStatus.RESOLVED
_RANK = {s._value_: s.rank for s in ErrorSeverity}
_ID_RNG = random.Random(os.urandom(32))  # error ids stay random whatever `seed` says


@dataclass(slots=True)
class Occurrence:
    """One occurrence classified and fingerprinted, not yet folded into a group."""

    ctx: Mapping[str, Any]
    exc: BaseException | None
    message: str
    exc_type: str | None
    vals: dict[str, str | None]
    component: str
    operation: str
    metadata: dict[str, Any] | None
    related: dict[str, Any]
    workers: list[str]
    tasks: list[str]
    cls: Any
    fp: str


def new_error_id() -> str:
    return f"{_ID_RNG.getrandbits(128):032x}"

def parse_enum(enum_cls: Any, key: str, value: Any) -> Any:
    """An enum member from its value (or itself); ValueError naming the context key otherwise."""
    return enum_member(enum_cls, f"context.{key}", value)


def _add_targets(report: ErrorReport, workers: list[str], tasks: list[str], metadata: dict[str, Any] | None) -> None:
    """Every task is named with the occurrence's (first) worker; further workers on their own."""
    worker = workers[0] if workers else None
    named: list[str | None] = list(tasks) or [None]
    for task in named:
        report.add_targets(worker, task, metadata)
    for other in workers[1:]:
        report.add_targets(other, None, metadata)


class ErrorHandler:
    """Turns exceptions and reports into error groups, durable in the store."""

    def __init__(
        self,
        store: Store,
        hook_timeout: float = 5.0,
        regression_window: float = 600.0,
        max_groups: int = 50_000,
        rng: random.Random | None = None,
        *,
        groups: GroupIndex | None = None,
        writer: GroupWriter | None = None,
        adopt: Callable[[ErrorReport], Awaitable[ErrorReport]] | None = None,
        on_loaded: Callable[[ErrorReport, LevelRecord | None], None] | None = None,
        max_metadata_bytes: int = MAX_METADATA_BYTES,
    ) -> None:
        """``groups`` and ``writer``: the index and its writer when others share them (made here
        otherwise); ``adopt``: a fleet's claim of new groups (``fleet.claim.GroupClaims.adopt``),
        which names the group to count into; ``on_loaded``: told of each group that comes back
        from the store, with its stored level row."""
        self.store = store
        # the store's committed seq: an evicted group's queued write is waited for only until then
        self.groups = groups if groups is not None else GroupIndex(max_groups, getattr(store, "committed_seq", None))
        self.writer = writer if writer is not None else GroupWriter(store, self.groups)
        self.hooks = HookRegistry(hook_timeout)
        self.context = ContextReader(max_metadata_bytes)
        self.regression_window = regression_window
        self.default_retry_policy = RetryPolicy()
        self._policies: dict[str, RetryPolicy] = {}
        self.rng = rng or random.Random()
        self.occurrences = 0
        self.by_type: dict[str, int] = {}
        self.by_severity: dict[str, int] = {}
        self.by_category: dict[str, int] = {}
        self.regressions = 0
        self.adopt = adopt
        self._changed = True
        self.stored = StoredGroups(store, self.groups, on_loaded)  # groups found in the store after a miss

    # -- configuration --------------------------------------------------------------------
    def set_retry_policy(self, component: str, policy: RetryPolicy) -> None:
        if not isinstance(policy, RetryPolicy):
            raise ValueError("policy: expected a RetryPolicy")
        self._policies[component] = policy

    def get_retry_policy(self, component: str) -> RetryPolicy:
        return self._policies.get(component, self.default_retry_policy)

    def register_error_hook(self, key: HookKey, hook: Hook) -> None:
        self.hooks.register(key, hook)

    # -- reporting ----------------------------------------------------------------------------
    def prepare(self, error: BaseException | str, context: Mapping[str, Any] | None) -> Occurrence:
        """Classify one occurrence and compute its fingerprint. No I/O, no state changed."""
        ctx = context or {}
        get = ctx.get
        if isinstance(error, BaseException):
            exc: BaseException | None = error
            message = storable(str(error) or type(error).__name__)
            exc_type: str | None = type(error).__name__
        else:
            exc = None
            message = storable(str(error))
            raw_type = get("exception_type")
            exc_type = storable(str(raw_type)) if raw_type else None
        # error_type, severity, the seed's priority flags, metadata, related_entities: a value not
        # understood is kept in metadata and warned about once, never raised (intake/context.py)
        read = self.context.read(ctx)
        # every string is made storable here (see error_handling/text.py): one value the database cannot
        # store must never cost this report, or another, its place in the store
        vals = context_strings(ctx)
        component = vals["component"] or "unknown"
        operation = vals["operation"] or "unknown"
        metadata = read.metadata
        # The seed named a worker or tasks in related_entities only: they are targets all the same.
        related = read.related or {}
        workers, tasks = related_targets(related) if related else ([], [])
        if vals["worker_id"]:
            workers.insert(0, vals["worker_id"])
        if vals["task_id"]:
            tasks.insert(0, vals["task_id"])
        vals["worker_id"] = vals["worker_id"] or (workers[0] if workers else None)
        vals["task_id"] = vals["task_id"] or (tasks[0] if tasks else None)
        cls, fp = identify(
            exc, message, component, operation, exc_type, read.error_type, read.severity or read.flagged,
            bool(vals["task_id"]), bool(vals["worker_id"]),
        )
        return Occurrence(ctx, exc, message, exc_type, vals, component, operation, metadata, related, workers,
                          tasks, cls, fp)

    def build(
        self, error: BaseException | str, context: Mapping[str, Any] | None
    ) -> tuple[ErrorReport, str, dict[str, Any] | None]:
        """Classify one occurrence and fold it into its group in memory: :meth:`report` without
        the store (no lookup of an evicted group, nothing queued). No I/O."""
        return self.fold(self.prepare(error, context))

    def fold(self, occ: Occurrence) -> tuple[ErrorReport, str, dict[str, Any] | None]:
        """Fold a prepared occurrence into its group (in memory). No I/O."""
        ctx, exc, message, exc_type, vals = occ.ctx, occ.exc, occ.message, occ.exc_type, occ.vals
        component, operation, metadata, related = occ.component, occ.operation, occ.metadata, occ.related
        workers, tasks, cls, fp = occ.workers, occ.tasks, occ.cls, occ.fp
        now = _now(UTC)
        self.occurrences += 1
        # keyed by the members' plain values: an Enum's __hash__ is a Python call, too slow here
        tv, sv, cv = cls.error_type._value_, cls.severity._value_, cls.category._value_
        self.by_type[tv] = self.by_type.get(tv, 0) + 1
        self.by_severity[sv] = self.by_severity.get(sv, 0) + 1
        self.by_category[cv] = self.by_category.get(cv, 0) + 1
        group = self.groups.by_fingerprint(fp)
        if group is not None and now <= group.last_seen:
            now = group.last_seen + _TICK  # strictly increasing per group: startup recounts by it
        if group is not None and (workers or tasks or metadata):  # else add_targets changes nothing
            _add_targets(group, workers, tasks, metadata)
        self._changed = True  # for report(): the group changed beyond its count and last_seen
        if group is not None and group.resolution_status is not _RESOLVED:  # group.is_open
            group.aggregated_count += 1
            group.last_seen = now
            severity = cls.severity  # compared by rank, without ErrorSeverity.__gt__'s calls
            self._changed = severity is not group.error_severity and _RANK[sv] > _RANK[group.error_severity._value_]
            if self._changed:
                group.error_severity = cls.severity
                self.groups.mark(group)  # it may be critical now
            group.new_group = False
            group.is_regression = False
            return group, message, metadata
        if group is not None and now - (group.resolution_time or now) <= timedelta(seconds=self.regression_window):
            group.aggregated_count += 1
            group.last_seen = now
            group.reopen(regression=True)
            group.new_group = False
            group.is_regression = True
            self.groups.mark(group)
            self.regressions += 1
            return group, message, metadata
        stack = ctx.get("stack_trace")
        if stack is None and exc is not None and exc.__traceback__ is not None:
            stack = "".join(traceback.format_exception(exc))
        if stack is not None:
            stack = storable(str(stack))
        report = ErrorReport(
            error_id=new_error_id(),
            error_type=cls.error_type,
            error_severity=cls.severity,
            message=message,
            context=ErrorContext(
                component=component,
                operation=operation,
                timestamp=now,
                worker_id=vals["worker_id"],
                task_id=vals["task_id"],
                hardware_id=vals["hardware_id"],
                request_id=vals["request_id"],
                user_id=vals["user_id"],
                stack_trace=stack,
                related_entities=related,
                metadata=dict(metadata or {}),
            ),
            category=cls.category,
            fingerprint=fp,
            exception_type=exc_type,
            exception=exc,
            first_seen=now,
            last_seen=now,
        )
        _add_targets(report, workers, tasks, metadata)
        if group is not None:  # resolved long ago: a new group, related to the old one
            report.related_errors.append(group.error_id)
        self.groups.add(report)
        return report, message, metadata

    async def report(
        self,
        error: BaseException | str,
        context: Mapping[str, Any] | None = None,
        idempotency: Callable[[ErrorReport], IdempotencyRecord] | None = None,
    ) -> tuple[ErrorReport, int]:
        """Classify, group, queue for persistence and start the hooks (in the background: never
        awaited here). Returns (report, write seq).

        A fingerprint that is not in memory but may be in the store (its group was evicted, or
        not loaded at startup) is looked up there first, off the event loop, so that the count
        stays exact whatever fits in memory. ``idempotency``: makes the record of the report's
        idempotency key (with its answer) from the group; the store writes it in the same commit
        as the occurrence."""
        occ = self.prepare(error, context)
        if self.groups.lookup_needed(occ.fp):
            found = await self.stored.load(occ.fp)
            if found is not None and self.groups.by_fingerprint(occ.fp) is None:
                self.groups.add(found)  # evicted again by the rest of a burst: back (counted already)
        report, message, metadata = self.fold(occ)
        changed = self._changed  # of this fold: another report may fold while a fleet claim waits
        if self.adopt is not None:  # a fleet: the group of this fingerprint may be another member's
            report = await self.adopt(report)
        # snapshots: the store's writer never reads the live report, which keeps changing
        # A group snapshot only when the group is new or changed beyond its count and last_seen.
        changed = changed or not report.persisted
        seq = self.store.record_occurrence(
            OccurrenceRecord.of(report, message, metadata, occ.vals), GroupRecord.of(report) if changed else None,
            idempotency(report) if idempotency is not None else None,
        )
        report.persisted = True  # queued: the store writes it (with this occurrence) from now on
        if self.adopt is None:
            report.write_seq = seq  # in the index (nothing was awaited since the fold)
        else:
            self.groups.written(report, seq)  # evicted during the claim, maybe
        if self.hooks.active:
            self.hooks.fire(report)  # in the background: a report never waits for a hook
        return report, seq

    def persist(self, report: ErrorReport) -> int:
        """Queue the group's current state for writing."""
        return self.writer.persist(report)

    # -- state ------------------------------------------------------------------------------------
    def restore(self, state: StoredState) -> None:
        """At startup: the stored groups the store loaded (the most recent), the fingerprints of
        the others (looked up on a miss), and the counts of every open group."""
        groups = self.groups
        for record in reversed(state.groups):
            groups.add(record.to_report(), counted=state.open_total is not None)
        groups.remember_stored(state.stored_fingerprints)
        if state.open_total is not None:  # the whole store's, in memory or not, counted once
            groups.open_total += state.open_total
            groups.critical_open += state.critical_open or 0

    def metrics(self) -> dict[str, Any]:
        """The counts of ``get_error_metrics`` (SPEC section 3)."""
        groups, hooks = self.groups, self.hooks
        return {
            "total_errors": self.occurrences,
            "groups_in_memory": len(groups),
            "open_groups": groups.count_open(),
            "unresolved_errors": groups.count_open(),  # the seed's name for it
            "by_type": dict(self.by_type),
            "error_counts": dict(self.by_type),  # the seed's name for it
            "by_severity": dict(self.by_severity),
            "by_category": dict(self.by_category),
            "regressions": self.regressions,
            "unrecognized_context_values": self.context.unrecognized,  # kept in metadata, warned once each
            "hook_calls": hooks.calls,
            "hook_failures": hooks.failures,
            "hook_timeouts": hooks.timeouts,
            "hook_overflow": hooks.overflow,  # calls not run: every hook thread busy (a hook that blocks)
            "evicted_groups": groups.evicted,
            "store_lookups": self.stored.lookups,  # fingerprints looked up in the store after a miss in memory
            "dropped_occurrences": self.store.status().dropped_occurrences,
        }

    # -- retry ----------------------------------------------------------------------------------
    async def retry_operation(
        self,
        operation: Callable[..., Any],
        args: list[Any] | tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> tuple[Any, ErrorReport | None]:
        """Run ``operation`` under the component's retry policy; (result, None) on success,
        (None, report) when every allowed attempt failed. Cancellation propagates at once."""
        ctx = dict(context or {})
        policy = self.get_retry_policy(str(ctx.get("component") or "unknown"))
        attempt = 0
        report: ErrorReport | None = None
        while True:
            try:
                result = operation(*(args or ()), **(kwargs or {}))
                if inspect.isawaitable(result):
                    result = await result
            except BaseException as exc:
                if is_never_retried(exc) or not isinstance(exc, Exception):
                    raise
                report, _ = await self.report(exc, ctx)
                attempt += 1
                if not policy.should_retry(report, attempt, exc):
                    report.retry_successful = False if attempt > 1 else None
                    report.fail()  # exhausted (or not retryable): failed, never left "retrying"
                    self.persist(report)
                    return None, report
                report.retry_count += 1
                report.retrying()
                self.persist(report)
                await asyncio.sleep(policy.delay(attempt, self.rng))
                continue
            if report is not None:
                report.retry_successful = True
                report.resolve("retry_operation")
                self.persist(report)
            return result, None
