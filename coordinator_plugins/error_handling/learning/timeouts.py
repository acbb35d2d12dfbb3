"""Adaptive timeouts per (error type, strategy), estimated the way TCP estimates its RTO.

SRTT and RTTVAR from successful durations (RFC 6298 gains 1/8 and 1/4), timeout = SRTT + 4 RTTVAR;
Karn's rule: a timed-out attempt is not a sample, it doubles the timeout instead. Bounded to
[min(1 s, default), 10 x default], and it comes down again after a slow spell.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coordinator_plugins.error_handling.storage.records import TimeoutRecord


@dataclass(slots=True)
class TimeoutEstimate:
    timeout: float
    srtt: float = 0.0
    rttvar: float = 0.0
    samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "timeout": round(self.timeout, 4),
            "srtt": round(self.srtt, 4),
            "rttvar": round(self.rttvar, 4),
            "samples": self.samples,
        }


class AdaptiveTimeouts:
    def __init__(self, default: float, save: Callable[[TimeoutRecord], Any] | None = None) -> None:
        self.default = default
        self.lo = min(1.0, default)
        self.hi = 10.0 * default
        self.save = save
        self._est: dict[tuple[str, str], TimeoutEstimate] = {}

    def _clamp(self, value: float) -> float:
        return min(self.hi, max(self.lo, value))

    def estimate(self, error_type: str, strategy_id: str) -> TimeoutEstimate:
        key = (error_type, strategy_id)
        est = self._est.get(key)
        if est is None:
            est = self._est[key] = TimeoutEstimate(self._clamp(self.default))
        return est

    def get(self, error_type: str, strategy_id: str) -> float:
        est = self._est.get((error_type, strategy_id))
        return est.timeout if est is not None else self._clamp(self.default)

    def observe_success(self, error_type: str, strategy_id: str, duration: float) -> float:
        est = self.estimate(error_type, strategy_id)
        d = max(0.0, duration)
        if est.samples == 0:
            est.srtt, est.rttvar = d, d / 2
        else:
            est.rttvar = 0.75 * est.rttvar + 0.25 * abs(est.srtt - d)
            est.srtt = 0.875 * est.srtt + 0.125 * d
        est.samples += 1
        est.timeout = self._clamp(est.srtt + 4 * est.rttvar)
        self._save(error_type, strategy_id, est)
        return est.timeout

    def observe_timeout(self, error_type: str, strategy_id: str) -> float:
        est = self.estimate(error_type, strategy_id)
        est.timeout = self._clamp(2 * est.timeout)
        self._save(error_type, strategy_id, est)
        return est.timeout

    def _save(self, error_type: str, strategy_id: str, est: TimeoutEstimate) -> None:
        if self.save is not None:
            self.save(TimeoutRecord(error_type, strategy_id, est.timeout, est.srtt, est.rttvar, est.samples))

    def load(self, records: list[TimeoutRecord]) -> None:
        for r in records:
            self._est[(r.error_type, r.strategy_id)] = TimeoutEstimate(
                self._clamp(float(r.timeout)), float(r.srtt or 0), float(r.rttvar or 0), int(r.samples or 0)
            )

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {f"{et}/{sid}": est.to_dict() for (et, sid), est in self._est.items()}
