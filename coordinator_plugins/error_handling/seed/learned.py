"""The seed's recovery records replayed through this plugin's learners: strategy evidence (from
which the adaptive policy also chooses where a new group starts) and timeouts.

What the seed learned holds until this plugin has evidence of its own: a timeout the seed kept
(``adaptive_timeouts``) is kept as it is (the records' durations are not replayed into it: the
first duration this plugin measures replaces it), and the seed's ranking of the strategies
(``strategy_scores.score``) is a new group's first choice until this plugin's own runs of the
seed's top strategy fail (``learning/seedprior.py``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, cast

from coordinator_plugins.error_handling.learning.performance import WINDOW, PerformanceTracker, Sample
from coordinator_plugins.error_handling.learning.seedprior import SeedPrior
from coordinator_plugins.error_handling.learning.timeouts import AdaptiveTimeouts
from coordinator_plugins.error_handling.model import utcnow
from coordinator_plugins.error_handling.seed.values import (
    SeedMigrationReport,
    count,
    number,
    parse_dict,
    parse_json,
    text,
    utc,
)
from coordinator_plugins.error_handling.storage.records import StrategyRun, StrategyScore, TimeoutRecord


class Capture:
    """The save callbacks of the learners: keeps the last record per key."""

    def __init__(self) -> None:
        self.scores: dict[tuple[str, str], StrategyScore] = {}
        self.timeouts: dict[tuple[str, str], TimeoutRecord] = {}
        self.prior = SeedPrior()

    def score(self, rec: StrategyScore) -> None:
        self.scores[(rec.key, rec.strategy_id)] = rec

    def timeout(self, rec: TimeoutRecord) -> None:
        self.timeouts[(rec.error_type, rec.strategy_id)] = rec


def performance_runs(
    rows: Iterable[dict[str, Any]], group_of: dict[str, str], report: SeedMigrationReport
) -> list[StrategyRun]:
    """The seed's records as this plugin's strategy runs, oldest first. A record without a time
    or a level keeps none (stored as NULL: it is evidence, but in no time window)."""
    out: list[tuple[datetime | None, int, StrategyRun]] = []
    for row in rows:
        sid, et, ok = row.get("strategy_id"), row.get("error_type"), row.get("success")
        elapsed = row.get("execution_time")
        if not sid or not et:
            report.skip("recovery_performance", row.get("id"), "no strategy_id or error_type")
            continue
        if not isinstance(ok, bool):
            report.skip("recovery_performance", row.get("id"), "no success value")
            continue
        if number(elapsed, -1.0, -1.0) < 0:
            report.skip("recovery_performance", row.get("id"), "no valid execution_time")
            continue
        ctx = parse_dict(row.get("context"), report)
        level = ctx.get("recovery_level")
        level = level if isinstance(level, int) and not isinstance(level, bool) and 1 <= level <= 5 else None
        failed = "timeout" if ctx.get("timeout") else "error" if ctx.get("exception") else "failure"
        affected = count(row.get("affected_tasks"))
        ts = utc(row.get("timestamp"))
        error_id = group_of.get(str(ctx.get("error_id")), text(ctx.get("error_id")))
        ctx["seed_id"] = row.get("id")
        strategy = text(sid) or ""
        out.append((ts, count(row.get("id")), StrategyRun(
            strategy_id=strategy, strategy_name=text(row.get("strategy_name")) or strategy,
            error_type=text(et) or "", execution_time=number(elapsed, 0.0), success=ok,
            affected_tasks=affected, recovered_tasks=min(affected, count(row.get("recovered_tasks"))),
            impact_score=number(row.get("impact_score"), 0.0, 0.0, 1.0),
            stability_score=number(row.get("stability_score"), 1.0, 0.0, 1.0),
            outcome="success" if ok else failed, error_id=error_id, level=cast(int, level),
            hardware_id=text(row.get("hardware_id")),
            resource_usage=parse_json(row.get("resource_usage"), report) or {}, context=ctx,
            timestamp=cast(datetime, ts),
        )))
    report.ok("recovery_performance", len(out))
    out.sort(key=lambda e: (e[0] or datetime.min.replace(tzinfo=UTC), e[1]))
    return [e[2] for e in out]


def learn(
    runs: list[StrategyRun], scores: list[dict[str, Any]], timeouts: list[dict[str, Any]],
    report: SeedMigrationReport,
) -> Capture:
    """Replay the seed's records through this plugin's learners; what they save is what is learned."""
    cap = Capture()
    perf = PerformanceTracker(cap.score)
    learned_timeouts = AdaptiveTimeouts(30.0, cap.timeout)
    seeded: dict[tuple[str, str], datetime | None] = {}
    for row in timeouts:
        et, sid, t = row.get("error_type"), row.get("strategy_id"), row.get("timeout")
        if not et or not sid or number(t, 0.0) <= 0:
            report.skip("adaptive_timeouts", (et, sid), "no error type, strategy or timeout")
            continue
        learned_timeouts.load([TimeoutRecord(str(et), str(sid), number(t, 0.0))])
        seeded[(str(et), str(sid))] = utc(row.get("last_updated"))
    # Only an arm's last WINDOW runs are replayed into its window and evidence (the others count in
    # its totals); every duration goes through the timeouts (a smoothed estimate depends on all).
    arms: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for run in runs:
        et, sid, hw = run.error_type, run.strategy_id, run.hardware_id
        sample = Sample(run.success, run.execution_time, run.impact_score, run.stability_score, run.affected_tasks,
                        run.recovered_tasks)
        for key in [et, f"{et}@{hw}"] if hw else [et]:
            arms[(key, sid)].append(sample)
        if (et, sid) in seeded:  # the seed's timeout holds until this plugin measures its own
            continue
        if run.outcome == "timeout":
            learned_timeouts.observe_timeout(et, sid)
        elif run.success:
            learned_timeouts.observe_success(et, sid, run.execution_time)
    for (key, sid), samples in arms.items():
        recent, older = samples[-WINDOW:], samples[:-WINDOW]
        arm = perf.arm(key, sid)
        arm.total, arm.total_successes = len(older), sum(1 for s in older if s.success)
        for sample in recent:
            perf.add([key], sid, sample)
    for (et, sid), updated in seeded.items():  # no measurement of this plugin's yet: no samples
        est = learned_timeouts.estimate(et, sid)
        cap.timeouts[(et, sid)] = TimeoutRecord(et, sid, est.timeout, 0.0, 0.0, 0, updated or utcnow())
        report.ok("adaptive_timeouts")
    ranked: list[tuple[str, str, float]] = []
    for row in scores:
        et, sid = row.get("error_type"), row.get("strategy_id")
        if not et or not sid:
            report.skip("strategy_scores", (et, sid), "no error type or strategy")
            continue
        if (str(et), str(sid)) not in perf.arms:
            _evidence_from_summary(perf, str(et), str(sid), row, report)
        if (score := number(row.get("score"), -1.0, -1.0)) >= 0:
            ranked.append((str(et), str(sid), score))
        report.ok("strategy_scores")
    cap.prior = SeedPrior.of_scores(ranked, perf)
    return cap


def _evidence_from_summary(
    perf: PerformanceTracker, et: str, sid: str, row: dict[str, Any], report: SeedMigrationReport
) -> None:
    """A score the seed kept without its records: a window of its samples at its success rate."""
    metrics = parse_dict(row.get("metrics"), report)
    n = min(WINDOW, count(row.get("samples")))
    rate = number(metrics.get("success_rate"), -1.0, -1.0, 1.0)
    if n == 0 or rate < 0:
        return
    elapsed = number(metrics.get("execution_time"), 0.0)
    impact = number(metrics.get("impact_score"), 0.0, 0.0, 1.0)
    stability = number(metrics.get("stability_score"), 1.0, 0.0, 1.0)
    wins = round(rate * n)
    for i in range(n):  # successes spread evenly through the window
        perf.add([et], sid, Sample((i + 1) * wins // n > i * wins // n, elapsed, impact, stability, 0, 0))
