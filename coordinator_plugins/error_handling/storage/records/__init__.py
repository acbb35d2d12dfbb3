"""The records that cross the storage seam: frozen snapshots, taken on the event loop, and what a
store answers. A store never sees a live report, and no caller knows a table's column order.

- ``groups``: an error group (:class:`GroupRecord`) and one of its occurrences
  (:class:`OccurrenceRecord`), and the fields the API shows of them;
- ``learned``: what recovery learns and keeps (strategy runs, levels, scores, timeouts, a
  policy's state);
- ``idempotency``: a client's idempotency key and the answer its report got;
- ``fingerprints``: the fingerprints of stored groups not in memory, a few bytes each
  (:class:`StoredFingerprints`);
- ``answers``: the state restored at startup, a page of groups and its query, totals, health.
"""

from coordinator_plugins.error_handling.storage.records.answers import (
    GroupPage,
    GroupQuery,
    StoredState,
    StoreStatus,
    StoreTotals,
)
from coordinator_plugins.error_handling.storage.records.fingerprints import StoredFingerprints
from coordinator_plugins.error_handling.storage.records.groups import (
    API_FIELDS,
    LIST_FIELDS,
    AliasRecord,
    GroupRecord,
    OccurrenceRecord,
)
from coordinator_plugins.error_handling.storage.records.idempotency import IdempotencyRecord
from coordinator_plugins.error_handling.storage.records.learned import (
    LearnerRecord,
    LevelRecord,
    StrategyRun,
    StrategyScore,
    TimeoutRecord,
)

__all__ = [
    "API_FIELDS",
    "LIST_FIELDS",
    "AliasRecord",
    "GroupPage",
    "GroupQuery",
    "GroupRecord",
    "IdempotencyRecord",
    "LearnerRecord",
    "LevelRecord",
    "OccurrenceRecord",
    "StoreStatus",
    "StoreTotals",
    "StoredFingerprints",
    "StoredState",
    "StrategyRun",
    "StrategyScore",
    "TimeoutRecord",
]
