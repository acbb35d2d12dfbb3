"""What the rows of a database file the seed framework wrote become here (SPEC 11): the seed hook
of the DuckDB store (``storage/seedhook.py``), which reads the rows and writes the result.

- ``error_reports``: each open, retrying or failed error becomes an open group with the same
  ``error_id``, count and status; open errors that this plugin's fingerprint (computed with
  ``intake.group.fingerprint`` on this plugin's classification) finds to be the same error are one
  group, under the id of the seed's primary (the error the seed aggregated the others into,
  else the earliest), counting them all, so new occurrences join it. Resolved errors stay
  resolved groups of their own (with the errors the seed related to them). Workers and tasks
  come from ``related_entities``. Every row is also an occurrence of its group; the seed's
  timestamps (naive local time) become UTC.
- ``error_relations`` folds into the groups: an error the seed aggregated into a primary is in
  the primary's group whatever either's status (the seed resolved primaries and left their
  related errors open); the primary's count already includes them, so each seed row counts
  once. Every seed id of a group other than its own is kept as an alias (``GET /errors/{id}``
  and every call taking an id answer for the group), listed in the group's
  ``recovery_details.related_errors``, with what the seed kept of that error.
- ``recovery_performance`` rows are kept (with an ``outcome`` and a level from their context)
  and replayed in time order through this plugin's learners: they are the strategy evidence,
  the adaptive timeouts and the learned start levels. What the seed learned holds until this
  plugin has evidence of its own: its timeouts are kept as they were, and its top-scored strategy
  per error type is a new group's first choice (``learned.py``). A ``strategy_scores`` row
  without records becomes evidence from its summary.
- ``progressive_recovery`` levels are kept (a resolved group's level is 1, as here).

A row that cannot be migrated (no id, no strategy, no outcome) is skipped, logged and counted; a
JSON value that does not parse is dropped from its row, which is kept, and counted as repaired.
The report of a migration is stored under ``learner_state`` key ``migration:seed``.
"""

from __future__ import annotations

from coordinator_plugins.error_handling.learning.seedprior import PRIOR_KEY
from coordinator_plugins.error_handling.model import iso, utcnow
from coordinator_plugins.error_handling.seed.errors import fold_relations, groups_of, levels_of
from coordinator_plugins.error_handling.seed.learned import learn, performance_runs
from coordinator_plugins.error_handling.seed.values import SeedMigrationReport
from coordinator_plugins.error_handling.storage.records import GroupRecord, LearnerRecord, OccurrenceRecord
from coordinator_plugins.error_handling.storage.seedhook import SeedConversion, SeedSource

REPORT_KEY = "migration:seed"  # the learner_state key the report is kept under


def convert_seed(source: SeedSource) -> SeedConversion:
    """The records a seed-written database becomes (the DuckDB store's seed hook)."""
    report = SeedMigrationReport(migrated_at=iso(utcnow()) or "")
    relations = list(source.rows("error_relations"))
    groups, group_of, occurrences, aliases = groups_of(source.rows("error_reports"), relations, report)
    by_id = {g.error_id: g for g in groups}
    fold_relations(relations, by_id, group_of, report)
    runs = performance_runs(source.rows("recovery_performance"), group_of, report)
    cap = learn(runs, list(source.rows("strategy_scores")), list(source.rows("adaptive_timeouts")), report)
    levels = levels_of(source.rows("progressive_recovery"), by_id, group_of, report)
    report.read = dict(source.read)
    report.groups = len(groups)
    report.open_groups = sum(1 for g in groups if g.is_open)
    summary = report.to_dict()
    return SeedConversion(
        groups=[GroupRecord.of(g) for g in groups],
        occurrences=[OccurrenceRecord(*o) for o in occurrences],
        aliases=aliases,
        runs=runs,
        levels=levels,
        scores=list(cap.scores.values()),
        timeouts=list(cap.timeouts.values()),
        learner=[LearnerRecord(REPORT_KEY, summary, utcnow()),
                 *([LearnerRecord(PRIOR_KEY, cap.prior.to_state(), utcnow())] if cap.prior.ranking else [])],
        report=summary,
        summary=(f"{report.groups} group(s) ({report.open_groups} open, {report.merged_errors} seed error(s) merged "
                 f"into them), {len(runs)} performance record(s), {sum(report.skipped.values())} row(s) skipped, "
                 f"{report.repaired} value(s) repaired"),
    )
