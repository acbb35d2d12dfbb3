"""The seed's first choices, kept after a migration until this plugin's own runs say otherwise.

A database the seed framework wrote holds its ranking of the strategies per error type
(``strategy_scores.score``). Replayed through this plugin's learners, the same records can rank
the strategies another way (the weighted score and the posterior weigh them differently), so a
seed user would see recovery change its first move the day they migrate, on no new evidence.
The rule: right after a migration, a new group's first strategy is the seed's top-scored one
(among those that can run first for it), until this plugin's own runs of that strategy fail for
that error type; from the first such failure on, the learned evidence decides, as for any error
type the seed never saw.

"Own runs" are the runs learned after the migration (this coordinator's, and a fleet's): the
conversion stores each strategy's failure count as it stood (``baseline``), and a failure past
it is one of this plugin's. The state is a learner row (``PRIOR_KEY``) written by the seed
conversion; nothing needs saving afterwards, because the evidence it compares with is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from coordinator_plugins.error_handling.learning.performance import PerformanceTracker

PRIOR_KEY = "seed:first_choice"


@dataclass
class SeedPrior:
    """Per error type: the seed's strategies best score first, and each one's failures at migration."""

    ranking: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    baseline: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def of_scores(cls, rows: Iterable[tuple[str, str, float]], perf: PerformanceTracker) -> SeedPrior:
        """From the seed's (error type, strategy, score) rows and the evidence they were replayed into."""
        prior = cls()
        for et, sid, score in rows:
            prior.ranking.setdefault(et, []).append((sid, float(score)))
        for et, ranked in prior.ranking.items():
            ranked.sort(key=lambda r: (-r[1], r[0]))
            prior.baseline[et] = {sid: _failures(perf, et, sid) for sid, _ in ranked}
        return prior

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> SeedPrior:
        """From its learner row; entries that do not read are left out (a prior is a preference)."""
        prior = cls()
        for et, entry in (state.get("error_types") or {}).items():
            try:
                ranked = [(str(sid), float(score)) for sid, score in entry["ranking"]]
                baseline = {str(k): int(v) for k, v in (entry.get("failures") or {}).items()}
            except (TypeError, ValueError, KeyError):
                continue
            prior.ranking[str(et)], prior.baseline[str(et)] = ranked, baseline
        return prior

    def to_state(self) -> dict[str, Any]:
        return {
            "rule": "a new group's first strategy is the seed's top-scored one until this plugin's own runs of it "
                    "fail for that error type",
            "error_types": {
                et: {"ranking": [[sid, round(score, 6)] for sid, score in ranked],
                     "failures": self.baseline.get(et, {})}
                for et, ranked in self.ranking.items()
            },
        }

    def pick(self, perf: PerformanceTracker, key: str, options: Iterable[str]) -> tuple[str, float] | None:
        """The seed's first choice for ``key`` (an error type, or ``type@hardware``) among
        ``options``, with its seed score; None when the seed ranked none of them, or when this
        plugin's own runs of that choice failed (the evidence decides from then on)."""
        et = key.split("@", 1)[0]
        allowed = set(options)
        for sid, score in self.ranking.get(et, ()):
            if sid in allowed:
                if _failures(perf, et, sid) > self.baseline.get(et, {}).get(sid, 0):
                    return None
                return sid, score
        return None


def _failures(perf: PerformanceTracker, et: str, sid: str) -> int:
    arm = perf.arms.get((et, sid))
    return 0 if arm is None else arm.total - arm.total_successes
