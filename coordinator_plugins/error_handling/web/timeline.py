"""The dashboard's timeline: this coordinator's errors and recoveries over the last hour.

It costs nothing per report: once a second it reads counters the plugin keeps anyway (errors
by type, open groups, budget use, recoveries in flight) and keeps an hour of those samples; each
finished recovery is kept as an event (it listens to the recovery manager). It is this process's
view, from when it started.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from coordinator_plugins.error_handling.recovery.outcome import RECOVERY_OUTCOMES, Listener, recovery_outcome

logger = logging.getLogger(__name__)

HORIZON = 3600  # seconds of samples kept
WARN_WINDOW = 600.0  # recoveries that could not act are warned about for this long
STEPS = (1, 2, 5, 10, 15, 30, 60)


class Budget(Protocol):
    def status(self) -> dict[str, Any]: ...


class Recoveries(Protocol):
    """What the timeline reads of the recovery manager, and how it listens to it."""

    @property
    def strategies(self) -> Mapping[str, object]: ...
    @property
    def inflight(self) -> Mapping[str, object]: ...
    @property
    def unactionable(self) -> Iterable[tuple[float, str]]: ...
    def add_listener(self, listener: Listener) -> None: ...


class Timeline:
    """An hour of per-second samples and the recoveries that finished, for the live charts.
    ``error_metrics``: the integration's ``get_error_metrics``; ``has_coordinator`` and
    ``auto_recover`` decide two of its warnings."""

    def __init__(
        self,
        error_metrics: Callable[[], Awaitable[dict[str, Any]]],
        budget: Budget,
        recovery: Recoveries,
        has_coordinator: bool,
        auto_recover: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.error_metrics = error_metrics
        self.budget = budget
        self.recovery = recovery
        self.has_coordinator = has_coordinator
        self.auto_recover = auto_recover
        self.clock = clock
        self.started = clock()
        # (time, errors by type since the previous sample, open groups, budget used, in flight)
        self.samples: deque[tuple[float, dict[str, int], int, int, int]] = deque(maxlen=HORIZON)
        self.recoveries: deque[dict[str, Any]] = deque(maxlen=10_000)
        self._last_by_type: dict[str, int] | None = None
        recovery.add_listener(self.on_recovery)

    def on_recovery(self, info: dict[str, Any]) -> None:
        self.recoveries.append(
            {
                "t": self.clock(),
                "error_id": info.get("error_id"),
                "error_type": info.get("error_type"),
                "outcome": recovery_outcome(info),
                "level": info.get("recovery_level"),
                "strategy_id": info.get("strategy_id"),
                "seconds": round(float(info.get("execution_time") or 0.0), 4),
            }
        )

    async def sample(self) -> None:
        metrics = await self.error_metrics()
        by_type = {str(k): int(v) for k, v in metrics["by_type"].items()}
        prev = self._last_by_type
        delta = {k: v - (prev or {}).get(k, 0) for k, v in by_type.items()} if prev is not None else {}
        self._last_by_type = by_type
        budget = self.budget.status()
        self.samples.append(
            (
                self.clock(),
                {k: v for k, v in delta.items() if v > 0},
                int(metrics["open_groups"]),
                int(budget["used_total"]),
                len(self.recovery.inflight),
            )
        )

    async def run(self, interval: float = 1.0) -> None:
        while True:
            try:
                await self.sample()
            except Exception:  # a sample must never stop the timeline
                logger.exception("dashboard timeline sample failed")
            await asyncio.sleep(interval)

    def series(self, window: int) -> dict[str, Any]:
        """Buckets of a round number of seconds (at most 150 of them) over the last ``window``
        seconds, or since the start when that is more recent (at least a minute)."""
        now = self.clock()
        span = min(float(window), max(60.0, now - self.started))  # nothing to show before the start
        step = next((s for s in STEPS if span / s <= 150), 60)
        start = (now - span) // step * step
        n = int(-(-(now - start) // step))
        errors: dict[str, list[float]] = {}
        open_groups: list[int | None] = [None] * n
        budget: list[int | None] = [None] * n
        in_flight: list[int | None] = [None] * n
        for t, delta, og, used, inflight in self.samples:
            b = int((t - start) // step)
            if not 0 <= b < n:
                continue
            for et, c in delta.items():
                errors.setdefault(et, [0.0] * n)[b] += c / step
            open_groups[b] = og
            budget[b] = max(budget[b] or 0, used)
            in_flight[b] = max(in_flight[b] or 0, inflight)
        recoveries = {o: [0] * n for o in RECOVERY_OUTCOMES}
        points = []
        for r in self.recoveries:
            b = int((r["t"] - start) // step)
            if 0 <= b < n:
                recoveries[r["outcome"]][b] += 1
                points.append({**r, "t": round(r["t"], 3)})
        status = self.budget.status()
        return {
            "now": round(now, 3),
            "start": start,
            "step_seconds": step,
            "buckets": n,
            "since": round(self.started, 3),
            "errors_per_second": {k: [round(x, 4) for x in v] for k, v in sorted(errors.items())},
            "recoveries": recoveries,
            "open_groups": open_groups,
            "budget_used": budget,
            "budget_limit": status["global_limit"] or None,
            "in_flight": in_flight,
            "recovery_points": points[-500:],
            "totals": {
                "errors": round(sum(sum(v) for v in errors.values()) * step),
                "recoveries": {o: sum(v) for o, v in recoveries.items()},
            },
            "warnings": self.warnings(now),
        }

    def warnings(self, now: float) -> list[dict[str, str]]:
        """Why recovery cannot act, in words an operator can act on."""
        out: list[dict[str, str]] = []
        if not self.has_coordinator:
            out.append({"level": "error", "code": "no_coordinator", "text": (
                "No coordinator: error handling was set up without one, so no recovery strategy can act "
                "(every recovery ends with nothing applicable). Pass your coordinator to "
                "setup(app, coordinator) or enable the plugin from the coordinator's config.")})
        if not self.recovery.strategies:
            out.append({"level": "error", "code": "no_strategies", "text": (
                "No recovery strategy is registered (builtin_strategies is empty and no custom one was "
                "added): errors are recorded and grouped, nothing recovers them.")})
        if not self.auto_recover:
            out.append({"level": "info", "code": "auto_recover_off", "text": (
                "Automatic recovery is off (auto_recover = false): errors are recorded and grouped; "
                "recovery runs only when your code calls handle_error.")})
        recent = [r for r in self.recoveries if now - r["t"] <= WARN_WINDOW]
        stuck = [str(r["error_type"]) for r in recent if r["outcome"] == "nothing_applicable"]
        # reports no strategy could act on start no recovery at all (they cost nothing): count them too
        stuck += [et for t, et in self.recovery.unactionable if now - t <= WARN_WINDOW]
        if stuck and self.has_coordinator:
            types = sorted(set(stuck))
            out.append({"level": "warning", "code": "nothing_applicable", "text": (
                f"Recovery could not act on {len(stuck)} error report(s) or recoveries in the last 10 minutes: "
                f"no registered strategy applies to {', '.join(types)} errors. Those groups stay open "
                "until the fault goes away or someone resolves them here.")})
        return out
