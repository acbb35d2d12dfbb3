"""Issue 29's scenario: a custom MEDIUM ``restart_worker`` strategy that says it fixed worker w2
and fixes nothing, ``verify_window = 4``, and a monitor that re-reports "worker w2 stopped
heartbeating" every 0.5 s while w2 stays dead. Prints, for each run of the strategy, when it ran
(seconds since the first report) and at which level, the level the group showed after each
recurrence, and when (and why) restart intensity stopped the group.
Run: python benchmarks/bench_stuck.py [--seconds S] [--backoff B] [--max-recoveries N]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from coordinator_plugins.error_handling import (
    EnhancedErrorHandlingIntegration,
    ErrorCategory,
    RecoveryLevel,
    RecoveryStrategy,
    validate_config,
)


class RestartWorker(RecoveryStrategy):
    def __init__(self, t0: float) -> None:
        super().__init__(None, "restart worker", RecoveryLevel.MEDIUM,
                         [ErrorCategory.WORKER_OFFLINE, ErrorCategory.WORKER_CRASH, ErrorCategory.WORKER_HANG])
        self.t0 = t0
        self.runs: list[tuple[float, int]] = []

    async def _execute_impl(self, error_info: dict[str, Any]) -> bool:
        self.runs.append((time.monotonic() - self.t0, error_info["level"]))
        return True  # a fake: fixes nothing


async def main(seconds: float, backoff: float, max_recoveries: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = validate_config({"database": str(Path(tmp) / "e.duckdb"), "verify_window": 4,
                               "escalation_backoff": backoff, "max_recoveries_per_group": max_recoveries,
                               "budget_window": 600})
        integ = EnhancedErrorHandlingIntegration(None, cfg)
        t0 = time.monotonic()
        fake = RestartWorker(t0)
        integ.add_custom_strategy("restart_worker", fake)
        await integ.start()
        rm = integ.recovery_manager
        shown: list[int] = []
        stopped_at = None
        try:
            while time.monotonic() - t0 < seconds:
                report = await integ.report_error("worker w2 stopped heartbeating",
                                                  {"component": "monitor", "worker_id": "w2"})
                shown.append(report.recovery_level)
                if stopped_at is None and report.error_id in rm.stopped_groups():
                    stopped_at = time.monotonic() - t0
                    reason = rm.stopped_groups()[report.error_id]
                await asyncio.sleep(0.5)
        finally:
            await integ.stop()
        print("runs (s since first report, level):", [(round(t, 2), lv) for t, lv in fake.runs])
        print("levels shown:", sorted(set(shown)), " reports:", len(shown))
        if stopped_at is not None:
            print(f"stopped at {stopped_at:.2f} s: {reason}")
        else:
            print("not stopped")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--backoff", type=float, default=1.0)
    ap.add_argument("--max-recoveries", type=int, default=5)
    a = ap.parse_args()
    asyncio.run(main(a.seconds, a.backoff, a.max_recoveries))
