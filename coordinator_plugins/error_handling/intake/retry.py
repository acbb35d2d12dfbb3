"""Retry policies: how often, how long between, and which errors to retry.

``max_retries=N`` means N retries after the first call. Cancellation, KeyboardInterrupt and
SystemExit are never retried or swallowed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from coordinator_plugins.error_handling.model import ErrorReport, ErrorSeverity, ErrorType, enum_member

_NEVER_RETRY = (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit)


@dataclass(slots=True)
class RetryPolicy:
    """The seed design's retry policy, with its parameters and safe defaults."""

    max_retries: int = 3
    initial_delay_ms: int = 500
    max_delay_ms: int = 30_000
    backoff_factor: float = 2.0
    jitter: float = 0.1
    retry_on_error_types: set[ErrorType] = field(default_factory=set)
    skip_on_error_types: set[ErrorType] = field(
        default_factory=lambda: {
            ErrorType.VALIDATION,
            ErrorType.ASSERTION,
            ErrorType.CONFIGURATION,
            ErrorType.AUTHENTICATION,
            ErrorType.AUTHORIZATION,
        }
    )
    skip_if_severity_above: ErrorSeverity | None = ErrorSeverity.HIGH
    custom_retry_condition: Callable[[ErrorReport], bool] | None = None

    def __post_init__(self) -> None:
        # The seed's forms: jitter as a bool (True meant up to 25%), error types and the severity
        # as their values, None for "no types".
        if self.jitter is True:  # (False stays False: no jitter, as the seed kept it; it counts as 0.0)
            self.jitter = SEED_JITTER
        self.retry_on_error_types = _types("retry_on_error_types", self.retry_on_error_types)
        self.skip_on_error_types = _types("skip_on_error_types", self.skip_on_error_types)
        if isinstance(self.skip_if_severity_above, str):
            self.skip_if_severity_above = enum_member(
                ErrorSeverity, "RetryPolicy.skip_if_severity_above", self.skip_if_severity_above
            )
        checks = (
            ("max_retries", isinstance(self.max_retries, int) and self.max_retries >= 0),
            ("initial_delay_ms", self.initial_delay_ms >= 0),
            ("max_delay_ms", self.max_delay_ms >= self.initial_delay_ms),
            ("backoff_factor", self.backoff_factor >= 1.0),
            ("jitter", 0.0 <= self.jitter <= 1.0),
        )
        for name, ok in checks:
            if not ok:
                raise ValueError(f"RetryPolicy.{name}: invalid value {getattr(self, name)!r}")

    def should_retry(self, report: ErrorReport, attempt: int | None = None, exc: BaseException | None = None) -> bool:
        """May attempt number ``attempt`` (1 = the first retry; by default the report's next one,
        as the seed's ``should_retry(report)`` counted) go ahead for this error?"""
        if attempt is None:
            attempt = report.retry_count + 1
        if isinstance(exc, _NEVER_RETRY):
            return False
        if attempt > self.max_retries:
            return False
        if self.retry_on_error_types and report.error_type not in self.retry_on_error_types:
            return False
        if report.error_type in self.skip_on_error_types:
            return False
        if self.skip_if_severity_above is not None and report.error_severity > self.skip_if_severity_above:
            return False
        if self.custom_retry_condition is not None:
            return bool(self.custom_retry_condition(report))
        return True

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (1-based); the cap holds after jitter."""
        base = self.initial_delay_ms * (self.backoff_factor ** max(0, attempt - 1))
        base = min(base, float(self.max_delay_ms))
        if self.jitter:
            r = (rng or random).uniform(-self.jitter, self.jitter)
            base = base * (1.0 + r)
        return max(0.0, min(base, float(self.max_delay_ms))) / 1000.0


    def get_delay_ms(self, retry_count: int, rng: random.Random | None = None) -> int:
        """The seed's name: milliseconds before retry ``retry_count`` (0-based)."""
        return round(self.delay(retry_count + 1, rng) * 1000)

    def to_dict(self) -> dict[str, Any]:
        """The policy's parameters, as the seed's ``to_dict`` gave them (types by their values)."""
        return {
            "max_retries": self.max_retries,
            "initial_delay_ms": self.initial_delay_ms,
            "max_delay_ms": self.max_delay_ms,
            "backoff_factor": self.backoff_factor,
            "jitter": self.jitter,
            "retry_on_error_types": sorted(t.value for t in self.retry_on_error_types) or None,
            "skip_on_error_types": sorted(t.value for t in self.skip_on_error_types) or None,
            "skip_if_severity_above": self.skip_if_severity_above.value if self.skip_if_severity_above else None,
        }


SEED_JITTER = 0.25  # the seed's jitter=True: a delay within 75% to 125% of its base


def _types(name: str, values: Iterable[ErrorType | str] | None) -> set[ErrorType]:
    if values is None:
        return set()
    if isinstance(values, str | ErrorType):
        values = [values]
    return {enum_member(ErrorType, f"RetryPolicy.{name}", v) for v in values}


def is_never_retried(exc: BaseException) -> bool:
    return isinstance(exc, _NEVER_RETRY)
