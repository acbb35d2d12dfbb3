"""Prometheus metrics, one CollectorRegistry per plugin instance (so two apps never collide)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import prometheus_client.metrics
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from coordinator_plugins.error_handling.intake.group import GroupIndex
from coordinator_plugins.error_handling.model import ErrorReport
from coordinator_plugins.error_handling.recovery.budget import RecoveryBudget
from coordinator_plugins.error_handling.recovery.manager import RecoveryManager
from coordinator_plugins.error_handling.storage.base import Store


def plugin_state(groups: GroupIndex, budget: RecoveryBudget, store: Store, recovery: RecoveryManager) -> dict[str, Any]:
    """The gauges' values: open groups, the budget, the store's status, recoveries in flight."""
    return {
        "open_groups": groups.count_open(),
        "budget": budget.status(),
        "store": store.status().to_dict(),
        "in_flight": len(recovery.inflight),
    }


class _StateCollector(Collector):
    def __init__(self, groups: GroupIndex, budget: RecoveryBudget, store: Store, recovery: RecoveryManager) -> None:
        self.parts = (groups, budget, store, recovery)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = plugin_state(*self.parts)
        yield GaugeMetricFamily(
            "error_handling_open_groups", "Open error groups (in memory or only in the store)", value=s["open_groups"]
        )
        yield GaugeMetricFamily("error_handling_recoveries_in_flight", "Recoveries running", value=s["in_flight"])
        b = s["budget"]
        yield GaugeMetricFamily(
            "error_handling_budget_used", "Budgeted actions (restarts, level 3+) in the current window",
            value=b["used_total"],
        )
        yield GaugeMetricFamily(
            "error_handling_budget_exhausted_components", "Components out of budget", value=len(b["exhausted"])
        )
        yield GaugeMetricFamily(
            "error_handling_store_pending_writes", "Writes not yet committed", value=s["store"]["pending_writes"]
        )
        yield GaugeMetricFamily("error_handling_store_ok", "1 when the store writes", value=int(s["store"]["ok"]))


class _ErrorsCollector(Collector):
    """``error_handling_errors`` (a counter by error_type and severity) as a prometheus Counter
    with those labels exposes it (``_total`` and, unless disabled, ``_created`` per label set, in
    the order the label sets first occurred), from counts kept in a plain dict: one dict update per
    report instead of a Counter child's inc (its checks and its lock), read at scrape time. Only
    the event loop counts; a scrape from another thread reads a copy."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.created: dict[tuple[str, str], float] = {}

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("error_handling_errors", "Errors reported", labels=["error_type", "severity"])

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("error_handling_errors", "Errors reported", labels=["error_type", "severity"])
        with_created = getattr(prometheus_client.metrics, "_use_created", True)
        created = self.created
        for key, count in list(self.counts.items()):
            family.add_metric(key, float(count), created[key] if with_created else None)
        yield family


class PluginMetrics:
    """The plugin's metrics: errors counted as they are reported (``on_error``), recoveries as
    they end (it listens to ``recovery``), the gauges read from the parts at scrape time."""

    def __init__(self, groups: GroupIndex, budget: RecoveryBudget, store: Store, recovery: RecoveryManager) -> None:
        self.registry = CollectorRegistry()
        self.errors = _ErrorsCollector()
        self.registry.register(self.errors)
        self.attempts = Counter(
            "error_handling_recovery_attempts",
            "Strategy runs",
            ["strategy", "level", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "error_handling_recovery_duration_seconds",
            "Time to end a recovery",
            ["success"],
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.registry.register(_StateCollector(groups, budget, store, recovery))
        self._counts = self.errors.counts
        recovery.add_listener(self.on_recovery)
        recovery.outcomes.settled.append(self.on_settled)

    def on_error(self, report: ErrorReport) -> None:
        key = (report.error_type._value_, report.error_severity._value_)
        counts = self._counts
        count = counts.get(key)
        if count is None:
            self.errors.created[key] = time.time()  # before the count: a scrape finds both
            counts[key] = 1
        else:
            counts[key] = count + 1

    def on_recovery(self, info: dict[str, Any]) -> None:
        # Outcomes are counted once final (SPEC 9): a success on probation is counted when its
        # verify window ends, as a success when it held, as a failure when it recurred.
        pending = info.get("verification") == "pending"
        for a in info["attempts"]:
            if pending and a["outcome"] == "success":
                continue
            self.attempts.labels(a["strategy_id"], str(a["level"]), a["outcome"]).inc()
        self.duration.labels(str(bool(info["success"])).lower()).observe(info["execution_time"])

    def on_settled(self, entry: dict[str, Any], held: bool) -> None:
        for a in entry.get("attempts") or []:
            if a.get("outcome") == "success":
                self.attempts.labels(a["strategy_id"], str(a["level"]), "success" if held else "failure").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
