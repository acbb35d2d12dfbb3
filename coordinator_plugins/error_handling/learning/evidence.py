"""Evidence about one (error key, strategy) pair: discounted success and failure counts, and a
change detector for a strategy that stops working.

Counts are discounted on the key's clock, which ticks once per strategy run recorded for that
key, whichever strategy ran: each tick multiplies every count of the key by ``DISCOUNT``. This
is discounted Thompson sampling's bookkeeping (Raj and Kalyani, 2017): a strategy that has not
run for a while keeps less and less evidence, its posterior widens back towards the prior, and
it is tried again; evidence from long ago cannot pin a choice for ever.

A one-sided Bernoulli CUSUM (Page, 1954) watches each pair that is believed to work (discounted
success rate at least ``CUSUM_ACTIVE`` over at least ``CUSUM_MIN_EVIDENCE`` runs) for a drop of
its success rate to ``CUSUM_RATIO`` times the rate it had when the excursion started: the sum of
log-likelihood ratios, floored at zero, must exceed ``CUSUM_THRESHOLD``. For a strategy that
worked 90% of the time that is three failures in a row; for one that worked 70% of the time,
six; a success in between pulls the sum back. A strategy whose rate does not change raises a
false alarm about once per 1,000 runs, whatever its rate. On an alarm the pair keeps only the runs
of the excursion (the evidence since the change began), and the caller discounts the other
pairs of the key by ``SHIFT_KEEP``: a farm whose fix stopped working has changed, and what
failed before may work now (M-UCB and GLR bandits restart likewise on a detected change).

Everything here is pure and persisted as a small JSON-able dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DISCOUNT = 0.998  # per tick of the key's clock: evidence halves over ~350 runs for that key
CUSUM_ACTIVE = 0.4
CUSUM_MIN_EVIDENCE = 3.0
CUSUM_RATIO = 0.25
CUSUM_THRESHOLD = 6.0
SHIFT_KEEP = 0.1  # what the other strategies of a key keep of their evidence after a detected change


@dataclass(slots=True)
class Evidence:
    successes: float = 0.0  # discounted, as of ``stamp``
    failures: float = 0.0
    stamp: int = 0  # the key's clock at the last update
    cusum: float = 0.0
    reference: float = 0.0  # the success rate the current CUSUM excursion started from
    excursion_failures: int = 0
    excursion_successes: int = 0
    changes: int = 0  # drops detected on this pair
    changed_at: int = -1  # the clock at the last detected drop

    def counts(self, clock: int) -> tuple[float, float]:
        """(successes, failures) discounted to the key's clock ``clock``."""
        k = DISCOUNT ** max(0, clock - self.stamp)
        return self.successes * k, self.failures * k

    def _move_to(self, clock: int) -> None:
        self.successes, self.failures = self.counts(clock)
        self.stamp = max(self.stamp, clock)

    def observe(self, success: bool, clock: int) -> bool:
        """Add one run at the key's clock ``clock``; True when it completes a detected drop."""
        self._move_to(clock)
        alarm = self._watch(success)
        if alarm:
            self.successes, self.failures = float(self.excursion_successes), float(self.excursion_failures)
            self.changes += 1
            self.changed_at = clock
            self._end_excursion()
        elif success:
            self.successes += 1.0
        else:
            self.failures += 1.0
        return alarm

    def _watch(self, success: bool) -> bool:
        n = self.successes + self.failures
        if self.cusum <= 0.0:
            rate = (self.successes + 0.5) / (n + 1.0)
            if n < CUSUM_MIN_EVIDENCE or rate < CUSUM_ACTIVE or success:
                return False
            self.reference = rate
        p0 = self.reference
        p1 = CUSUM_RATIO * p0
        self.cusum += math.log(p1 / p0) if success else math.log((1.0 - p1) / (1.0 - p0))
        if self.cusum <= 0.0:
            self._end_excursion()
            return False
        if success:
            self.excursion_successes += 1
        else:
            self.excursion_failures += 1
        return self.cusum > CUSUM_THRESHOLD

    def _end_excursion(self) -> None:
        self.cusum, self.reference, self.excursion_failures, self.excursion_successes = 0.0, 0.0, 0, 0

    def shrink(self, keep: float, clock: int) -> None:
        """Keep a fraction of the evidence: the farm changed under it."""
        self._move_to(clock)
        self.successes *= keep
        self.failures *= keep
        self._end_excursion()

    def to_json(self) -> dict[str, Any]:
        return {
            "s": round(self.successes, 6),
            "f": round(self.failures, 6),
            "t": self.stamp,
            "cusum": round(self.cusum, 6),
            "ref": round(self.reference, 6),
            "xf": self.excursion_failures,
            "xs": self.excursion_successes,
            "changes": self.changes,
            "changed_at": self.changed_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evidence:
        return cls(
            successes=_count(data.get("s")),
            failures=_count(data.get("f")),
            stamp=int(data.get("t", 0)),
            cusum=_count(data.get("cusum")),
            reference=min(1.0, _count(data.get("ref"))),
            excursion_failures=int(data.get("xf", 0)),
            excursion_successes=int(data.get("xs", 0)),
            changes=int(data.get("changes", 0)),
            changed_at=int(data.get("changed_at", -1)),
        )


def _count(value: Any) -> float:
    """A non-negative finite float from stored state (anything else counts as 0)."""
    x = float(value or 0.0)
    return x if math.isfinite(x) and x > 0.0 else 0.0
