"""Prometheus metrics, one CollectorRegistry per plugin instance (so two apps never collide)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from coordinator_plugins.error_handling.model import ErrorReport

if TYPE_CHECKING:
    from coordinator_plugins.error_handling.integration import EnhancedErrorHandlingIntegration


class _StateCollector(Collector):
    def __init__(self, integ: EnhancedErrorHandlingIntegration) -> None:
        self.integ = integ

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.integ.stats_for_metrics()
        yield GaugeMetricFamily(
            "error_handling_open_groups", "Open error groups (in memory or only in the store)", value=s["open_groups"]
        )
        yield GaugeMetricFamily("error_handling_recoveries_in_flight", "Recoveries running", value=s["in_flight"])
        b = s["budget"]
        yield GaugeMetricFamily(
            "error_handling_budget_used", "Level-3+ actions in the current window", value=b["used_total"]
        )
        yield GaugeMetricFamily(
            "error_handling_budget_exhausted_components", "Components out of budget", value=len(b["exhausted"])
        )
        yield GaugeMetricFamily(
            "error_handling_store_pending_writes", "Writes not yet committed", value=s["store"]["pending_writes"]
        )
        yield GaugeMetricFamily("error_handling_store_ok", "1 when the store writes", value=int(s["store"]["ok"]))


class PluginMetrics:
    def __init__(self, integ: EnhancedErrorHandlingIntegration) -> None:
        self.registry = CollectorRegistry()
        self.errors = Counter(
            "error_handling_errors", "Errors reported", ["error_type", "severity"], registry=self.registry
        )
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
        self.registry.register(_StateCollector(integ))
        self._children: dict[Any, Any] = {}

    def on_error(self, report: ErrorReport) -> None:
        key = (report.error_type._value_, report.error_severity._value_)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.errors.labels(report.error_type.value, report.error_severity.value)
        child.inc()

    def on_recovery(self, info: dict[str, Any]) -> None:
        for a in info["attempts"]:
            self.attempts.labels(a["strategy_id"], str(a["level"]), a["outcome"]).inc()
        self.duration.labels(str(bool(info["success"])).lower()).observe(info["execution_time"])

    def render(self) -> bytes:
        return generate_latest(self.registry)
