"""The seed's error rows as this plugin's groups: classified, fingerprinted, merged, related, levelled."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from coordinator_plugins.error_handling.intake.classify import Classification, classify
from coordinator_plugins.error_handling.intake.context import related_mapping, related_targets
from coordinator_plugins.error_handling.intake.group import fingerprint
from coordinator_plugins.error_handling.model import (
    ErrorContext,
    ErrorReport,
    ErrorSeverity,
    ResolutionStatus,
    iso,
    utcnow,
)
from coordinator_plugins.error_handling.seed.values import (
    SeedMigrationReport,
    count,
    enum_of,
    exception_type_of,
    parse_dict,
    parse_json,
    text,
    utc,
)
from coordinator_plugins.error_handling.storage.records import AliasRecord, LevelRecord

Classified = dict[tuple[Any, ...], tuple[Classification, str]]


def _report(
    row: dict[str, Any], report: SeedMigrationReport, seen_before: Classified
) -> tuple[ErrorReport, str | None, dict[str, Any]]:
    """One seed error as a group of its own (before merging), its seed error type and context.
    ``seen_before`` caches classifications: a seed database repeats the same few errors."""
    ctx = parse_dict(row.get("context_data"), report)
    component = text(row.get("component") or ctx.get("component")) or "unknown"
    operation = text(row.get("operation") or ctx.get("operation")) or "unknown"
    message = text(row.get("message")) or ""
    stack = text(ctx.get("stack_trace")) if isinstance(ctx.get("stack_trace"), str) else None
    try:
        related = related_mapping(ctx.get("related_entities"))
    except ValueError:
        related = {}
    workers, tasks = related_targets(related)
    severity = enum_of(ErrorSeverity, row.get("error_severity"))
    exc_type = exception_type_of(stack)
    ckey = (message, component, operation, exc_type, severity, bool(tasks), bool(workers))
    known = seen_before.get(ckey)
    if known is None:
        # Classified as a new occurrence of the same error would be here, so that it joins the group.
        cls = classify(None, message, component, operation, exception_type=exc_type, explicit_severity=severity,
                       has_task=bool(tasks), has_worker=bool(workers))
        fp = fingerprint(cls.error_type.value, cls.category.value, component, operation, exc_type, message)
        known = seen_before[ckey] = (cls, fp)
    cls, fp = known
    seen = utc(row.get("timestamp")) or utc(ctx.get("timestamp")) or utcnow()
    md = ctx.get("metadata")
    metadata: dict[str, Any] = dict(md) if isinstance(md, dict) else {}
    for key in ("related_entities", "environment", "user_id", "request_id"):
        if ctx.get(key) and key not in metadata:
            metadata[key] = ctx[key]
    hardware = related.get("hardware_id") or metadata.get("hardware_id")
    status = enum_of(ResolutionStatus, row.get("resolution_status")) or ResolutionStatus.OPEN
    group = ErrorReport(
        error_id=str(row["error_id"]),
        error_type=cls.error_type,
        error_severity=cls.severity,
        message=message,
        context=ErrorContext(
            component=component, operation=operation, timestamp=seen,
            worker_id=text(workers[0]) if workers else None, task_id=text(tasks[0]) if tasks else None,
            hardware_id=text(hardware) if isinstance(hardware, str) else None,
            stack_trace=stack, related_entities=related, metadata=metadata,
        ),
        category=cls.category,
        fingerprint=fp,
        exception_type=exc_type,
        retry_count=count(row.get("retry_count")),
        retry_successful=row.get("retry_successful") if isinstance(row.get("retry_successful"), bool) else None,
        aggregated_count=max(1, count(row.get("aggregated_count"))),
        resolution_status=status,
        resolution_time=utc(row.get("resolution_time")) if status is ResolutionStatus.RESOLVED else None,
        resolution_strategy=text(row.get("resolution_strategy")),
        recovery_details=parse_dict(row.get("recovery_details"), report),
        first_seen=seen,
        last_seen=seen,
        new_group=False,
    )
    if status is ResolutionStatus.RESOLVED and group.resolution_time is None:
        group.resolution_time = seen
    seed_type = row.get("error_type")
    return group, (str(seed_type) if seed_type is not None else None), ctx


class _Bucket:
    """Seed errors that are one group here, folded as they are read: the primary (the error the
    seed aggregated the others into, else the earliest) and what their group adds up to."""

    __slots__ = ("count", "first", "ids", "last", "primary", "retries", "severity", "twice")

    def __init__(self, g: ErrorReport) -> None:
        self.primary, self.ids, self.count, self.twice = g, [g.error_id], g.aggregated_count, 0
        self.first, self.last, self.severity, self.retries = g.first_seen, g.last_seen, g.error_severity, g.retry_count

    def add(self, g: ErrorReport, parents: set[str]) -> None:
        self.ids.append(g.error_id)
        self.count += g.aggregated_count
        self.first, self.last = min(self.first, g.first_seen), max(self.last, g.last_seen)
        self.severity, self.retries = max(self.severity, g.error_severity), max(self.retries, g.retry_count)
        if _rank(g, parents) < _rank(self.primary, parents):
            self.primary = g

    def merge(self, other: _Bucket, parents: set[str]) -> None:
        """Take in another bucket (the same error here): its ids, counts and times."""
        self.ids.extend(other.ids)
        self.count += other.count
        self.twice += other.twice
        self.first, self.last = min(self.first, other.first), max(self.last, other.last)
        self.severity, self.retries = max(self.severity, other.severity), max(self.retries, other.retries)
        if _rank(other.primary, parents) < _rank(self.primary, parents):
            self.primary = other.primary

    def group(self) -> ErrorReport:
        """The group, under the primary's id. A primary's count already includes the errors the
        seed related to it (``twice``), which are rows of their own too: each seed occurrence
        counts once."""
        g = self.primary
        g.aggregated_count = max(len(self.ids), self.count - self.twice)
        g.first_seen, g.last_seen, g.error_severity, g.retry_count = self.first, self.last, self.severity, self.retries
        merged = sorted(set(self.ids) - {g.error_id})
        if merged:
            g.recovery_details.setdefault("seed_migration", {})["merged_error_ids"] = merged
        return g


def _rank(g: ErrorReport, parents: set[str]) -> tuple[bool, datetime, str]:
    return (g.error_id not in parents, g.first_seen, g.error_id)


class _Relations:
    """The seed's ``error_relations`` as clusters: each related error belongs to its primary's
    group, whatever either's status (the seed resolved a primary and left the errors aggregated
    into it open: they were that one error all the same)."""

    def __init__(self, relations: list[dict[str, Any]]) -> None:
        self.pairs = {(str(r["error_id"]), str(r["related_error_id"])) for r in relations
                      if r.get("error_id") and r.get("related_error_id")}
        self.parents = {p for p, m in self.pairs if p != m}
        self.parent_of: dict[str, str] = {}
        for p, m in sorted(self.pairs):
            if p != m:
                self.parent_of.setdefault(m, p)

    def root(self, error_id: str) -> str | None:
        """The primary at the top of ``error_id``'s cluster; None when it is in no relation."""
        if error_id not in self.parent_of and error_id not in self.parents:
            return None
        seen = {error_id}
        while (up := self.parent_of.get(error_id)) is not None and up not in seen:  # a cycle ends it
            seen.add(up)
            error_id = up
        return error_id


def _alias_details(row: dict[str, Any], g: ErrorReport, seed_type: str | None, ctx: dict[str, Any]) -> dict[str, Any]:
    """What the seed kept of one error folded into another's group (its own row), to show under its id."""
    return {
        "timestamp": iso(g.first_seen), "error_type": seed_type, "error_severity": text(row.get("error_severity")),
        "message": g.message, "resolution_status": text(row.get("resolution_status")),
        "aggregated_count": count(row.get("aggregated_count")), "retry_count": g.retry_count,
        "resolution_strategy": g.resolution_strategy,
        "context_data": {k: v for k, v in ctx.items() if k != "stack_trace"},
        "recovery_details": {k: v for k, v in g.recovery_details.items() if k != "seed_migration"},
    }


def groups_of(
    rows: Iterable[dict[str, Any]], relations: list[dict[str, Any]], report: SeedMigrationReport
) -> tuple[list[ErrorReport], dict[str, str], list[tuple[Any, ...]], list[AliasRecord]]:
    """(groups, seed error id -> group id, occurrence rows: one per seed error, the aliases: the
    seed's ids that name another's group)."""
    rel = _Relations(relations)
    parents = rel.parents
    buckets: dict[str, _Bucket] = {}  # open errors here, by fingerprint
    clusters: dict[str, _Bucket] = {}  # errors the seed related, by their primary's id
    resolved: list[_Bucket] = []
    occurrences: list[tuple[Any, ...]] = []  # taken before merging changes the primary's times
    kept: dict[str, dict[str, Any]] = {}  # seed id -> what the seed kept of it (shown under its id as an alias)
    seen_before: Classified = {}
    for row in rows:
        if not row.get("error_id"):
            report.skip("error_reports", row.get("error_id"), "no error_id")
            continue
        try:
            g, seed_type, ctx = _report(row, report, seen_before)
        except Exception as exc:  # a row this code does not foresee: skipped, never fatal
            report.skip("error_reports", row["error_id"], f"{type(exc).__name__}: {exc}")
            continue
        kept[g.error_id] = _alias_details(row, g, seed_type, ctx)
        info: dict[str, Any] = {"migrated_at": report.migrated_at, "context_data": kept[g.error_id]["context_data"]}
        if seed_type and seed_type != g.error_type.value:
            info["seed_error_type"] = seed_type
        g.recovery_details["seed_migration"] = info
        c = g.context
        occurrences.append((g.error_id, g.first_seen, g.message, c.worker_id, c.task_id, c.hardware_id,
                            {"seed_error_id": g.error_id}))
        root = rel.root(g.error_id)
        if root is not None:
            if (cluster := clusters.get(root)) is None:
                clusters[root] = _Bucket(g)
            else:
                cluster.add(g, parents)
        elif not g.is_open:
            resolved.append(_Bucket(g))
        elif (bucket := buckets.get(g.fingerprint)) is None:
            buckets[g.fingerprint] = _Bucket(g)
        else:
            bucket.add(g, parents)  # g itself is dropped unless it becomes the primary
    for p, m in rel.pairs:  # a primary's count includes the related rows: each is counted once
        if p != m and p in kept and m in kept and (root := rel.root(p)) in clusters:
            clusters[root].twice += 1
    for cluster in clusters.values():  # as its primary is: an open one joins the open group of its error
        g = cluster.primary
        if not g.is_open:
            resolved.append(cluster)
        elif (bucket := buckets.get(g.fingerprint)) is None:
            buckets[g.fingerprint] = cluster
        else:
            bucket.merge(cluster, parents)
    group_of: dict[str, str] = {}
    groups: list[ErrorReport] = []
    aliases: list[AliasRecord] = []
    for b in [*buckets.values(), *resolved]:
        g = b.group()
        if not g.is_open and g.fingerprint in buckets:  # never competes with the open group of its error
            g.fingerprint = f"seed:{g.error_id}"
        groups.append(g)
        report.merged_errors += len(b.ids) - 1
        for i in sorted(b.ids, key=lambda i: (kept[i]["timestamp"] or "", i)):  # as the seed saw them
            group_of[i] = g.error_id
            if i != g.error_id:
                relation = "aggregated" if i in rel.parent_of or i in parents else "merged"
                aliases.append(AliasRecord(i, g.error_id, relation, kept[i]))
                g.recovery_details.setdefault("related_errors", []).append({"error_id": i, "relation": relation})
                g.related_errors.append(i)
    report.aliases = len(aliases)
    report.ok("error_reports", len(occurrences))
    return groups, group_of, [(group_of[o[0]], *o[1:]) for o in occurrences], aliases


def fold_relations(
    relations: list[dict[str, Any]], groups: dict[str, ErrorReport], group_of: dict[str, str],
    report: SeedMigrationReport,
) -> None:
    """The relations that did not fold into a group (between two groups) listed on the group of
    their primary, as ``recovery_details.related_errors``; those that name no migrated error are
    skipped and counted."""
    for r in relations:
        p, m = r.get("error_id"), r.get("related_error_id")
        if not p or not m:
            report.skip("error_relations", (p, m), "no error id")
            continue
        gp, gm = group_of.get(str(p), str(p)), group_of.get(str(m), str(m))
        owner = groups.get(gp) or groups.get(gm)
        if owner is None:
            report.skip("error_relations", (p, m), "names no migrated error")
            continue
        other = str(m) if owner.error_id == gp else str(p)
        if gp != gm:  # (within one group the relation is listed already, by the group)
            entry = {"error_id": other, "relation": text(r.get("relation_type")) or "related"}
            listed = owner.recovery_details.setdefault("related_errors", [])
            if entry not in listed:
                listed.append(entry)
                owner.related_errors.append(other)
        report.ok("error_relations")


def levels_of(
    rows: Iterable[dict[str, Any]], groups: dict[str, ErrorReport], group_of: dict[str, str],
    report: SeedMigrationReport,
) -> list[LevelRecord]:
    """The seed's recovery levels, one per group (the highest of its seed errors'), with their
    escalations as history; a resolved group's level is 1."""
    by_group: dict[str, tuple[int, datetime, list[Any]]] = {}
    for row in rows:
        seed_id, level = row.get("error_id"), row.get("current_level")
        if not seed_id or not isinstance(level, int) or isinstance(level, bool):
            report.skip("progressive_recovery", seed_id, "no error_id or level")
            continue
        gid = group_of.get(str(seed_id), text(seed_id) or "")
        hist = parse_json(row.get("history"), report)
        entries = [_history_entry(h) for h in hist if isinstance(h, dict)] if isinstance(hist, list) else []
        updated = utc(row.get("last_updated")) or utcnow()
        old = by_group.get(gid)
        if old is not None:
            level, updated, entries = max(level, old[0]), max(updated, old[1]), old[2] + entries
        by_group[gid] = (min(5, max(1, level)), updated, entries)
        report.ok("progressive_recovery")
    out: list[LevelRecord] = []
    for gid, (level, updated, entries) in by_group.items():
        g = groups.get(gid)
        if g is not None:
            level = level if g.is_open else 1  # resolved: back at level 1, as a resolve does here
            g.recovery_level = level
        entries.sort(key=lambda h: str(h.get("at") or ""))
        out.append(LevelRecord(gid, level, updated, tuple(entries)))
    return out


def _history_entry(h: dict[str, Any]) -> dict[str, Any]:
    """A seed escalation ({timestamp, old_level, new_level, strategy_id, success, details}) with
    the keys of this plugin's history entries added."""
    at = utc(h.get("timestamp"))
    return {**h, "at": iso(at) if at else h.get("timestamp"), "recovery_level": h.get("old_level"),
            "success": bool(h.get("success")), "source": "seed"}
